/// Text the calibrate pass runs through the model to measure activation ranges: prose, questions
/// in the shape of knowledge-editing prompts, a chat turn, numbers and code. Written for zo.
public enum CalibrationText {
    public static let samples: [String] = [
        "The river town grew slowly through the nineteenth century. Its mills were built of red brick, and the bridge that crossed the water was rebuilt twice after floods.",
        "Q: What is the capital city of Australia? A: Canberra. Q: Who wrote the novel Pride and Prejudice? A: Jane Austen.",
        "<|im_start|>user\nCan you explain how a refrigerator keeps food cold?<|im_end|>\n<|im_start|>assistant\nA refrigerator moves heat from the inside to the outside using a refrigerant.",
        "The mother tongue of Danielle Darrieux is French. The Eiffel Tower is located in the city of Paris, and it was completed in 1889.",
        "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n    return total / len(values)\n\nprint(mean([3, 5, 8, 13]))",
        "In 2021 the company reported revenue of 4.7 billion dollars, up 12 percent from the previous year, while operating costs fell by 3 percent.",
        "Which river flows through Vienna? What language is spoken in Brazil? Who painted the Mona Lisa? Where was Albert Einstein born?",
        "Photosynthesis converts light energy into chemical energy. Plants take in carbon dioxide and water and release oxygen as a by-product.",
    ]
}
