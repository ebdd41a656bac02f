import XCTest
import ZOIR

/// Text form: printing, parsing and their round trips, and parse errors on malformed text.
final class IRTextTests: XCTestCase {
    /// A small module exercising every attribute kind, quantized types and several functions.
    static func sample() throws -> Module {
        let mb = ModuleBuilder(name: "sample", attributes: ["eps": .float(1e-5), "n": .int(3), "tag": .string("a \"q\"\n"), "flag": .bool(true)])
        mb.declareConstant("w", .f32([4, 8]), .data(.f32((0..<32).map(Float.init))))
        mb.declareConstant("g", .f32([8]), .data(.f32(Array(repeating: 1, count: 8))))
        mb.declareConstant("qw", TensorType(.i8, [4, 8], quant: .perChannel(axis: 0, scales: "qw.scales")), .data(.i8(Array(repeating: 1, count: 32))))
        mb.declareConstant("qw.scales", .f32([4]), .data(.f32([0.1, 0.2, 0.3, 0.4])))
        let f = FunctionBuilder("main", in: mb)
        let x = f.param("x", .f32([2, 8]))
        f.loc = "blk.0"
        let n = try f.emit(.rmsNorm, [x, f.constant("g")], ["eps": .float(1e-5)])
        let y = try f.emit(.fullyConnected, [n, f.constant("w")])
        let t = try f.emit(.transpose, [y], ["perm": .ints([1, 0])])
        let s = try f.emit(.slice, [t], ["begin": .ints([1, 0]), "size": .ints([2, 2])])
        let c = try f.emit(.concat, [s, s], ["axis": .int(0)])
        f.output("out", c)
        f.output("y", y)
        f.finish()
        let g = FunctionBuilder("other", in: mb)
        let a = g.param("a", TensorType(.i16, [3], quant: .perTensor(scale: 0.0123, zeroPoint: -4)))
        g.output("a", try g.emit(.reshape, [a], ["shape": .ints([1, 3])]))
        g.finish()
        _ = try g.constant("qw")
        return mb.module
    }

    func testPrintParsePrintIsIdentical() throws {
        let m = try Self.sample()
        try Verifier.verify(m)
        let text = IRPrinter.print(m)
        let parsed = try IRParser.parse(text)
        XCTAssertEqual(parsed, m)
        XCTAssertEqual(IRPrinter.print(parsed), text)
        XCTAssertTrue(text.contains("q<axis=0, @qw.scales>"))
        XCTAssertTrue(text.contains("q<0.0123, zp=-4>"))
        XCTAssertTrue(text.contains(#"tag = "a \"q\"\n""#))
        XCTAssertTrue(text.contains(#"loc("blk.0")"#))
    }

    func testPrintingIsDeterministic() throws {
        XCTAssertEqual(IRPrinter.print(try Self.sample()), IRPrinter.print(try Self.sample()))
    }

    func parseError(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> IRParseError? {
        do {
            _ = try IRParser.parse(text, file: "t.zoir")
            XCTFail("expected a parse error", file: file, line: line)
            return nil
        } catch let e as IRParseError {
            return e
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
            return nil
        }
    }

    func testMalformedTextGivesLineColumnAndMessage() throws {
        let good = IRPrinter.print(try Self.sample())
        // An op name with a typo.
        let typo = good.replacingOccurrences(of: "= rms_norm", with: "= rms_nrom")
        let e1 = try XCTUnwrap(parseError(typo))
        XCTAssertTrue(e1.message.contains("unknown op 'rms_nrom'"), e1.description)
        XCTAssertEqual(e1.lineText.trimmingCharacters(in: .whitespaces).hasPrefix("%"), true)
        XCTAssertTrue(e1.description.hasPrefix("t.zoir:\(e1.line):\(e1.column): error:"))

        // A bad element type.
        let e2 = try XCTUnwrap(parseError(good.replacingOccurrences(of: "tensor<2x8xf32>", with: "tensor<2x8xf33>")))
        XCTAssertTrue(e2.message.contains("2x8xf33"), e2.message)

        // A use before definition.
        let e3 = try XCTUnwrap(parseError("module @m\n\nfunc @f(%0 \"x\": tensor<2xf32>) -> (\"y\": tensor<2xf32>) {\n  %1 = add %0, %2 : tensor<2xf32>\n  return %1\n}\n"))
        XCTAssertEqual(e3.line, 4)
        XCTAssertTrue(e3.message.contains("%2 is used before it is defined"), e3.message)

        // Truncated text.
        let e4 = try XCTUnwrap(parseError(String(good.prefix(good.count / 2))))
        XCTAssertFalse(e4.message.isEmpty)

        // Unterminated string, duplicate attribute, garbage at top level.
        XCTAssertTrue(try XCTUnwrap(parseError("module @m {a = \"x}\n")).message.contains("string"))
        XCTAssertTrue(try XCTUnwrap(parseError("module @m {a = 1, a = 2}\n")).message.contains("given twice"))
        XCTAssertTrue(try XCTUnwrap(parseError("module @m\nfoo\n")).message.contains("expected 'const' or 'func'"))
        // A result whose declared type disagrees with the returned value.
        let e5 = try XCTUnwrap(parseError("module @m\n\nfunc @f(%0 \"x\": tensor<2xf32>) -> (\"y\": tensor<3xf32>) {\n  return %0\n}\n"))
        XCTAssertTrue(e5.message.contains("declared"), e5.message)
    }

    func testEveryPrefixOfValidTextFailsCleanlyOrParses() throws {
        // Parsing must never crash, whatever is cut off.
        let good = IRPrinter.print(try Self.sample())
        let bytes = Array(good.utf8)
        var errors = 0, parsed = 0
        for cut in 0..<bytes.count {
            do {
                let m = try IRParser.parse(String(decoding: bytes[..<cut], as: UTF8.self))
                // Only a cut between whole declarations parses, and then it is that part of the module.
                XCTAssertTrue(good.hasPrefix(IRPrinter.print(m).trimmingCharacters(in: .newlines)), "cut at \(cut)")
                parsed += 1
            } catch is IRParseError {
                errors += 1
            }
        }
        XCTAssertEqual(errors + parsed, bytes.count)
        XCTAssertGreaterThan(errors, bytes.count * 9 / 10)
    }
}

final class VerifierTests: XCTestCase {
    func diagnostics(_ text: String) throws -> [Diagnostic] { Verifier.diagnose(try IRParser.parse(text)) }

    func testWrongResultTypeIsReported() throws {
        let d = try diagnostics("""
        module @m

        func @f(%0 "x": tensor<2x3xf32>, %1 "y": tensor<3xf32>) -> ("z": tensor<2x3xf32>) {
          %2 = add %0, %1 : tensor<2x4xf32> loc("here")
          return %0
        }
        """)
        XCTAssertEqual(d.count, 1)
        XCTAssertEqual(d.first?.value, 2)
        XCTAssertEqual(d.first?.loc, "here")
        XCTAssertTrue(d.first!.message.contains("should be tensor<2x3xf32>"), d.first!.description)
    }

    func testMissingAndUnknownAttributesAndArity() throws {
        let d = try diagnostics("""
        module @m

        func @f(%0 "x": tensor<2x3xf32>) -> ("z": tensor<2x3xf32>) {
          %1 = softmax %0 {axes = 1} : tensor<2x3xf32>
          %2 = silu %0, %0 : tensor<2x3xf32>
          %3 = reshape %0 {shape = [7]} : tensor<7xf32>
          return %0
        }
        """)
        let text = d.map(\.description).joined(separator: "\n")
        XCTAssertTrue(text.contains("unknown attribute 'axes'"), text)
        XCTAssertTrue(text.contains("missing attribute 'axis'"), text)
        XCTAssertTrue(text.contains("takes 1 operands, got 2"), text)
        XCTAssertTrue(text.contains("cannot reshape [2, 3]"), text)
    }

    func testUndeclaredConstantAndProfile() throws {
        let m = try IRParser.parse("""
        module @m

        const @w : tensor<3xf32>

        func @f(%0 "x": tensor<3xf32>) -> ("z": tensor<3xf32>) {
          %1 = constant {name = @w} : tensor<3xf32>
          %2 = constant {name = @nope} : tensor<3xf32>
          %3 = add %0, %1 : tensor<3xf32>
          %4 = silu %3 : tensor<3xf32>
          return %4
        }
        """)
        let d = Verifier.diagnose(m)
        XCTAssertEqual(d.count, 1)
        XCTAssertTrue(d[0].message.contains("undeclared constant"))
        let npu = Verifier.diagnose(m, profile: .npu).map(\.description).joined(separator: "\n")
        XCTAssertTrue(npu.contains("op 'silu' is not in the npu profile"), npu)
        XCTAssertTrue(npu.contains("%3 = add: result dtype f32 is not allowed in the npu profile"), npu)
        XCTAssertTrue(npu.contains("parameter \"x\" has dtype f32"), npu)
    }
}
