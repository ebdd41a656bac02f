import Foundation
import XCTest
import ZOModelIO
import ZOTestSupport

/// Each block format on hand-built blocks whose values were worked out by hand from the layout.
final class DequantizeTests: XCTestCase {
    func f16(_ x: Float) -> [UInt8] { withUnsafeBytes(of: Float16(x).bitPattern.littleEndian) { Array($0) } }
    func u32(_ x: UInt32) -> [UInt8] { withUnsafeBytes(of: x.littleEndian) { Array($0) } }

    /// Writes a one-tensor GGUF, reads it back, dequantizes.
    func roundTrip(_ type: GGMLType, elements: Int, _ bytes: [UInt8]) throws -> [Float] {
        var w = GGUFWriter()
        w.add("general.architecture", .string("test"))
        w.addTensor("t", dims: [elements], type: type, data: Data(bytes))
        let path = TestPaths.scratch(self).appendingPathComponent("t.gguf").path
        try w.write(to: path)
        let g = try GGUFFile(path: path)
        XCTAssertEqual(g.tensorInfo("t")?.byteCount, bytes.count)
        return try g.dequantize("t")
    }

    func testF32F16BF16() throws {
        let v: [Float] = [0, 1, -2.5, 65504]
        XCTAssertEqual(try roundTrip(.f32, elements: 4, v.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian) { Array($0) } }), v)
        XCTAssertEqual(try roundTrip(.f16, elements: 4, v.flatMap(f16)), v)
        // bf16 is the top half of an f32: 1.0 = 0x3F80, -2.5 = 0xC020.
        XCTAssertEqual(try roundTrip(.bf16, elements: 2, [0x80, 0x3F, 0x20, 0xC0]), [1, -2.5])
    }

    func testQ4_0() throws {
        // d = 0.5; qs[j] = j | (15 − j) << 4 → x[j] = (j − 8)/2, x[j+16] = (7 − j)/2.
        let y = try roundTrip(.q4_0, elements: 32, f16(0.5) + (0..<16).map { UInt8($0 | ((15 - $0) << 4)) })
        XCTAssertEqual(y[0], -4); XCTAssertEqual(y[15], 3.5); XCTAssertEqual(y[16], 3.5); XCTAssertEqual(y[31], -4)
        for j in 0..<16 { XCTAssertEqual(y[j], Float(j - 8) * 0.5); XCTAssertEqual(y[j + 16], Float(7 - j) * 0.5) }
    }

    func testQ4_1() throws {
        // d = 0.25, m = −1: x = q/4 − 1.
        let y = try roundTrip(.q4_1, elements: 32, f16(0.25) + f16(-1) + (0..<16).map { UInt8($0 | ((15 - $0) << 4)) })
        XCTAssertEqual(y[0], -1); XCTAssertEqual(y[15], 2.75); XCTAssertEqual(y[16], 2.75); XCTAssertEqual(y[31], -1)
    }

    func testQ5_0() throws {
        // d = 1, qh = 0x0000FFFF: elements 0..15 get the 5th bit (q | 16) − 16 = q; 16..31 do not: q − 16.
        let y = try roundTrip(.q5_0, elements: 32, f16(1) + u32(0x0000_FFFF) + (0..<16).map { UInt8($0 | ((15 - $0) << 4)) })
        XCTAssertEqual(y[0], 0); XCTAssertEqual(y[7], 7); XCTAssertEqual(y[16], -1); XCTAssertEqual(y[31], -16)
    }

    func testQ5_1() throws {
        // d = 2, m = 0.5, qh = 0xFFFF0000: 0..15 plain q·2 + 0.5; 16..31 (q | 16)·2 + 0.5.
        let y = try roundTrip(.q5_1, elements: 32, f16(2) + f16(0.5) + u32(0xFFFF_0000) + (0..<16).map { UInt8($0 | ((15 - $0) << 4)) })
        XCTAssertEqual(y[0], 0.5); XCTAssertEqual(y[3], 6.5); XCTAssertEqual(y[16], 62.5); XCTAssertEqual(y[31], 32.5)
    }

    func testQ8_0() throws {
        let y = try roundTrip(.q8_0, elements: 32, f16(0.125) + (0..<32).map { UInt8(bitPattern: Int8($0 - 16)) })
        for j in 0..<32 { XCTAssertEqual(y[j], Float(j - 16) * 0.125) }
    }

    /// Packed 6-bit scales/mins: sub-blocks 0..3 use the low 6 bits of bytes 0..7; 4..7 take 4 bits
    /// from bytes 8..11 and their top 2 bits from the top bits of bytes 0..7.
    var kScales: [UInt8] { [1 | 0xC0, 2, 3, 4, 5 | 0x40, 6, 7, 8, 0x21, 0x43, 0x65, 0x87] }
    // sub:  0     1  2  3  4       5  6  7
    // sc:   1     2  3  4  1|3<<4  3  5  7   (= 49 for sub 4)
    // min:  5     6  7  8  2|1<<4  4  6  8   (= 18 for sub 4)
    var kQs: [UInt8] { (0..<128).map { UInt8(($0 % 16) | ((15 - $0 % 16) << 4)) } }

    func testQ4_K() throws {
        // d = 1, dmin = 0.5; x = sc·q − 0.5·min.
        let y = try roundTrip(.q4_K, elements: 256, f16(1) + f16(0.5) + kScales + kQs)
        XCTAssertEqual(y[0], 0 * 1 - 2.5)       // sub 0, q = 0
        XCTAssertEqual(y[32], 15 * 2 - 3)       // sub 1, high nibble of qs[0] = 15
        XCTAssertEqual(y[130], 2 * 49 - 9)      // sub 4, low nibble of qs[66] = 2
        XCTAssertEqual(y[200], 8 * 5 - 3)       // sub 6, low nibble of qs[104] = 8
        XCTAssertEqual(y[255], 0 * 7 - 4)       // sub 7, high nibble of qs[127] = 0
    }

    func testQ5_K() throws {
        // As Q4_K plus qh: bit 2c of qh[l] adds 16 to the low nibble of chunk c; here only those bits are set.
        let qh = [UInt8](repeating: 0b0101_0101, count: 32)
        let y = try roundTrip(.q5_K, elements: 256, f16(1) + f16(0.5) + kScales + qh + kQs)
        XCTAssertEqual(y[0], 16 * 1 - 2.5)
        XCTAssertEqual(y[32], 15 * 2 - 3)
        XCTAssertEqual(y[130], 18 * 49 - 9)
        XCTAssertEqual(y[255], 0 * 7 - 4)
    }

    func testQ6_K() throws {
        // d = 0.5, scales[i] = i − 8; ql = 0x21 (low 1, high 2); qh = 0b11_10_01_00 gives the four
        // quarter-blocks high bits 0, 1, 2, 3: q = 1−32, 17−32, 34−32, 50−32 = −31, −15, 2, 18.
        let ql = [UInt8](repeating: 0x21, count: 128), qh = [UInt8](repeating: 0b1110_0100, count: 64)
        let sc = (0..<16).map { UInt8(bitPattern: Int8($0 - 8)) }
        let y = try roundTrip(.q6_K, elements: 256, ql + qh + sc + f16(0.5))
        XCTAssertEqual(y[0], 0.5 * -8 * -31)    // scale 0
        XCTAssertEqual(y[32], 0.5 * -6 * -15)   // scale 2
        XCTAssertEqual(y[64], 0.5 * -4 * 2)     // scale 4
        XCTAssertEqual(y[113], 0.5 * -1 * 18)   // l = 17: scale 1 + 6
        XCTAssertEqual(y[128], 0)               // second half, scale 8 = 0
        XCTAssertEqual(y[255], 0.5 * 7 * 18)    // scale 15
    }

    func testUnsupportedTypeIsATypedError() throws {
        var w = GGUFWriter()
        w.addTensor("t", dims: [256], type: .q2_K, data: Data(count: GGMLType.q2_K.blockBytes))
        let path = TestPaths.scratch(self).appendingPathComponent("t.gguf").path
        try w.write(to: path)
        XCTAssertThrowsError(try GGUFFile(path: path).dequantize("t")) { e in
            XCTAssertEqual(e as? ModelIOError, .unsupportedTensorType(path: path, tensor: "t", type: GGMLType.q2_K.rawValue))
        }
    }
}
