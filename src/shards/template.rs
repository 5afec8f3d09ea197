//! Instruction templates: an instruction record becomes a prompt (no loss) and a response (loss).
//!
//! `alpaca` is the Stanford Alpaca prompt (tatsu-lab/stanford_alpaca `train.py`, `PROMPT_DICT`), with and
//! without input, plus a newline after `### Response:` as alpaca-lora writes it, so the response starts on
//! its own line instead of being glued to the colon; `alpaca_{tr,et,fa,zh}` are the same prompt with its header and section names in the
//! target language; `chat` is the Llama-2 chat turn `[INST] … [/INST] answer`.

/// One instruction record (DESIGN.md "Data contracts": instruction JSONL).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Instruction {
    /// Record id.
    pub id: serde_json::Value,
    /// The task.
    pub instruction: String,
    /// Optional context (empty = none).
    #[serde(default)]
    pub input: String,
    /// The expected response.
    pub output: String,
    /// Language code.
    #[serde(default)]
    pub lang: String,
    /// Id of the record this one was translated from.
    #[serde(default)]
    pub source_id: Option<serde_json::Value>,
    /// Translation backend that made it.
    #[serde(default)]
    pub translator: Option<String>,
}

/// The words of an Alpaca-style prompt in one language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlpacaWords {
    /// Header when the record has an input.
    pub with_input: &'static str,
    /// Header when it has none.
    pub without_input: &'static str,
    /// Section names: instruction, input, response.
    pub sections: [&'static str; 3],
}

/// A named prompt template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// Alpaca-style prompt with `### …:` sections.
    Alpaca(&'static AlpacaWords),
    /// Llama-2 chat: `[INST] instruction\n\ninput [/INST]`, response after a space.
    Chat,
}

const ALPACA_EN: AlpacaWords = AlpacaWords {
    with_input: "Below is an instruction that describes a task, paired with an input that provides further context. \
                 Write a response that appropriately completes the request.",
    without_input:
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    sections: ["Instruction", "Input", "Response"],
};
const ALPACA_TR: AlpacaWords = AlpacaWords {
    with_input: "Aşağıda bir görevi tanımlayan bir talimat ve daha fazla bağlam sağlayan bir girdi bulunmaktadır. \
                 İsteği uygun şekilde tamamlayan bir yanıt yazın.",
    without_input:
        "Aşağıda bir görevi tanımlayan bir talimat bulunmaktadır. İsteği uygun şekilde tamamlayan bir yanıt yazın.",
    sections: ["Talimat", "Girdi", "Yanıt"],
};
const ALPACA_ET: AlpacaWords = AlpacaWords {
    with_input: "Allpool on juhis, mis kirjeldab ülesannet, koos sisendiga, mis annab täiendavat konteksti. \
                 Kirjuta vastus, mis täidab palve asjakohaselt.",
    without_input: "Allpool on juhis, mis kirjeldab ülesannet. Kirjuta vastus, mis täidab palve asjakohaselt.",
    sections: ["Juhis", "Sisend", "Vastus"],
};
const ALPACA_FA: AlpacaWords = AlpacaWords {
    with_input: "در زیر دستورالعملی آمده است که یک کار را توصیف می‌کند، همراه با ورودی‌ای که زمینهٔ بیشتری فراهم می‌کند. \
                 پاسخی بنویسید که درخواست را به‌درستی انجام دهد.",
    without_input:
        "در زیر دستورالعملی آمده است که یک کار را توصیف می‌کند. پاسخی بنویسید که درخواست را به‌درستی انجام دهد.",
    sections: ["دستورالعمل", "ورودی", "پاسخ"],
};
const ALPACA_ZH: AlpacaWords = AlpacaWords {
    with_input: "以下是描述任务的指令，以及提供更多上下文的输入。请写出恰当完成该请求的回答。",
    without_input: "以下是描述任务的指令。请写出恰当完成该请求的回答。",
    sections: ["指令", "输入", "回答"],
};

impl Template {
    /// Every template name, in the order error messages list them.
    pub const NAMES: [&'static str; 6] = ["alpaca", "alpaca_tr", "alpaca_et", "alpaca_fa", "alpaca_zh", "chat"];

    /// The template called `name`, or a message listing the known names.
    pub fn by_name(name: &str) -> Result<Template, String> {
        Ok(match name {
            "alpaca" => Template::Alpaca(&ALPACA_EN),
            "alpaca_tr" => Template::Alpaca(&ALPACA_TR),
            "alpaca_et" => Template::Alpaca(&ALPACA_ET),
            "alpaca_fa" => Template::Alpaca(&ALPACA_FA),
            "alpaca_zh" => Template::Alpaca(&ALPACA_ZH),
            "chat" => Template::Chat,
            _ => return Err(format!("unknown template '{name}'; known templates: {}", Self::NAMES.join(", "))),
        })
    }

    /// The prompt and the response of `r` (their concatenation is the example's text).
    ///
    /// ```
    /// use langadapt::shards::{Instruction, Template};
    /// let r: Instruction = serde_json::from_str(r#"{"id":1,"instruction":"Say hi.","output":"Hi!"}"#).unwrap();
    /// let (prompt, response) = Template::by_name("chat").unwrap().format(&r);
    /// assert_eq!((prompt.as_str(), response.as_str()), ("[INST] Say hi. [/INST]", " Hi!"));
    /// ```
    pub fn format(&self, r: &Instruction) -> (String, String) {
        let has_input = !r.input.trim().is_empty();
        match self {
            Template::Alpaca(w) => {
                let [ins, inp, resp] = w.sections;
                let prompt = if has_input {
                    format!(
                        "{}\n\n### {ins}:\n{}\n\n### {inp}:\n{}\n\n### {resp}:\n",
                        w.with_input, r.instruction, r.input
                    )
                } else {
                    format!("{}\n\n### {ins}:\n{}\n\n### {resp}:\n", w.without_input, r.instruction)
                };
                (prompt, r.output.clone())
            }
            Template::Chat => {
                let user = if has_input { format!("{}\n\n{}", r.instruction, r.input) } else { r.instruction.clone() };
                (format!("[INST] {} [/INST]", user.trim()), format!(" {}", r.output.trim()))
            }
        }
    }

    /// The prompt of an instruction with no input: what a model tuned with this template is asked at
    /// evaluation (code-switching, generation).
    pub fn prompt(&self, instruction: &str) -> String {
        let r = Instruction {
            id: serde_json::Value::Null,
            instruction: instruction.into(),
            input: String::new(),
            output: String::new(),
            lang: String::new(),
            source_id: None,
            translator: None,
        };
        self.format(&r).0
    }

    /// Where a generated response ends: the start of the next turn in this format.
    pub fn stop(&self) -> String {
        match self {
            Template::Alpaca(w) => format!("### {}:", w.sections[0]),
            Template::Chat => "[INST]".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(input: &str) -> Instruction {
        Instruction {
            id: 1.into(),
            instruction: "Translate.".into(),
            input: input.into(),
            output: "Tere.".into(),
            lang: "et".into(),
            source_id: None,
            translator: None,
        }
    }

    #[test]
    fn alpaca_matches_the_stanford_prompt_dict() {
        let t = Template::by_name("alpaca").unwrap();
        // PROMPT_DICT["prompt_input"] / ["prompt_no_input"] of tatsu-lab/stanford_alpaca train.py, + "\n".
        assert_eq!(
            t.format(&rec("Hello.")).0,
            "Below is an instruction that describes a task, paired with an input that provides further context. \
             Write a response that appropriately completes the request.\n\n\
             ### Instruction:\nTranslate.\n\n### Input:\nHello.\n\n### Response:\n"
        );
        assert_eq!(
            t.format(&rec("")),
            (
                "Below is an instruction that describes a task. Write a response that appropriately completes the \
                 request.\n\n### Instruction:\nTranslate.\n\n### Response:\n"
                    .to_string(),
                "Tere.".to_string()
            )
        );
        let et = Template::by_name("alpaca_et").unwrap().format(&rec("Hello.")).0;
        assert!(et.ends_with("### Juhis:\nTranslate.\n\n### Sisend:\nHello.\n\n### Vastus:\n"), "{et}");
    }

    #[test]
    fn evaluation_prompts_and_stops_follow_the_template() {
        let tr = Template::by_name("alpaca_tr").unwrap();
        assert_eq!(
            tr.prompt("Bir şiir yaz."),
            "Aşağıda bir görevi tanımlayan bir talimat bulunmaktadır. İsteği uygun şekilde tamamlayan bir yanıt \
             yazın.\n\n### Talimat:\nBir şiir yaz.\n\n### Yanıt:\n"
        );
        assert_eq!(tr.stop(), "### Talimat:");
        assert_eq!(
            (Template::Chat.prompt("Hi."), Template::Chat.stop()),
            ("[INST] Hi. [/INST]".into(), "[INST]".into())
        );
    }

    #[test]
    fn chat_and_unknown_names() {
        assert_eq!(
            Template::Chat.format(&rec("Hello.")),
            ("[INST] Translate.\n\nHello. [/INST]".to_string(), " Tere.".to_string())
        );
        let err = Template::by_name("vicuna").unwrap_err();
        assert_eq!(
            err,
            "unknown template 'vicuna'; known templates: alpaca, alpaca_tr, alpaca_et, alpaca_fa, alpaca_zh, chat"
        );
        for name in Template::NAMES {
            assert!(Template::by_name(name).is_ok());
        }
    }
}
