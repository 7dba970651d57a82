//! The key shapes the gateway issues and accepts: AI Stats (`aistats_v1_sk_<kid>_<secret>`) and
//! AIsa (`sk-aisa-<random>`). New keys take the shape `--key-format` names; keys of both shapes
//! (and opaque keys of each `--accept-prefix`, brought in by an import) always verify, so one
//! store holds both and switching shapes leaves every issued key working. The `import` example
//! reads the same options, so that it accepts exactly the keys the gateway will.

use keygate::format::{OpaqueFormat, SelectorFormat};
use keygate::secret::Peppers;
use keygate::{Pepper, Verifier};

/// The options' help lines.
pub(crate) const HELP: &str = "\
  --key-format SHAPE      The shape of new keys (default aistats): aistats (aistats_v1_sk_<kid>_<secret>)
                          or aisa (sk-aisa-<random>). Keys of both shapes always verify, so
                          switching shapes keeps every issued key working
  --prefix PREFIX         The AI Stats shape's prefix (default aistats)
  --aisa-prefix PREFIX    The AIsa shape's prefix (default sk-aisa-)
  --accept-prefix PREFIX  Also accept opaque keys starting with PREFIX (keys imported from
                          another system); up to two
";

/// Which shape new keys take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    AiStats,
    Aisa,
}

/// The key format options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyFormats {
    pub(crate) issue: Shape,
    pub(crate) prefix: String,
    pub(crate) aisa_prefix: String,
    pub(crate) accept: Vec<String>,
}

impl Default for KeyFormats {
    fn default() -> Self {
        Self {
            issue: Shape::AiStats,
            prefix: "aistats".to_owned(),
            aisa_prefix: "sk-aisa-".to_owned(),
            accept: Vec::new(),
        }
    }
}

impl KeyFormats {
    /// Takes `flag` if it is one of these options (its value from `value`): `None` if it is not.
    pub(crate) fn take(
        &mut self,
        flag: &str,
        value: impl FnOnce() -> Result<String, String>,
    ) -> Option<Result<(), String>> {
        let set = |this: &mut Self| -> Result<(), String> {
            match flag {
                "--key-format" => {
                    this.issue = match value()?.as_str() {
                        "aistats" => Shape::AiStats,
                        "aisa" => Shape::Aisa,
                        other => return Err(format!("--key-format: {other:?} is not aistats or aisa")),
                    };
                }
                "--prefix" => this.prefix = value()?,
                "--aisa-prefix" => this.aisa_prefix = value()?,
                _ => this.accept.push(value()?),
            }
            Ok(())
        };
        matches!(flag, "--key-format" | "--prefix" | "--aisa-prefix" | "--accept-prefix").then(|| set(self))
    }

    /// A verifier issuing keys of the chosen shape and accepting every configured one. Both
    /// shapes' standard keys are `sk`; the operator's management key (`mk`) is always of the AI
    /// Stats shape, since an opaque key has no kind.
    pub(crate) fn verifier(&self, pepper: Pepper) -> Result<Verifier, String> {
        let selector = SelectorFormat::new(&self.prefix)
            .and_then(|f| f.with_kinds(&["sk", "mk"]))
            .map_err(|e| format!("--prefix: {e}"))?;
        let opaque = |prefix: &str, flag: &str| OpaqueFormat::new(prefix).map_err(|e| format!("{flag}: {e}"));
        let aisa = opaque(&self.aisa_prefix, "--aisa-prefix")?;
        let peppers = Peppers::new(pepper);
        let mut verifier = match self.issue {
            Shape::AiStats => Verifier::new(selector, peppers).with_format(aisa),
            Shape::Aisa => Verifier::new(aisa, peppers).with_format(selector),
        }
        .map_err(|e| e.to_string())?;
        for prefix in &self.accept {
            let format = opaque(prefix, "--accept-prefix")?;
            verifier = verifier.with_format(format).map_err(|e| format!("--accept-prefix: {e}"))?;
        }
        Ok(verifier)
    }

    /// What new keys look like, and what else verifies, for the welcome line.
    pub(crate) fn describe(&self) -> String {
        let aistats = format!("{}_v1_sk_…", self.prefix);
        let aisa = format!("{}…", self.aisa_prefix);
        let (new, old) = match self.issue {
            Shape::AiStats => (aistats, aisa),
            Shape::Aisa => (aisa, aistats),
        };
        let mut text = format!("new keys read {new}; keys reading {old}");
        for prefix in &self.accept {
            text.push_str(&format!(", {prefix}…"));
        }
        text + " verify too"
    }
}
