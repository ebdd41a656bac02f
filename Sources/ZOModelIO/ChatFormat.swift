/// A user turn in a model's chat format.
public enum ChatFormat {
    /// ChatML, as SmolLM2's template writes it (with its default system turn when the template has one).
    public static func prompt(_ user: String, template: String?) -> String {
        var s = ""
        if let t = template, t.contains("You are a helpful AI assistant named SmolLM") {
            s += "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        }
        return s + "<|im_start|>user\n\(user)<|im_end|>\n<|im_start|>assistant\n"
    }
}
