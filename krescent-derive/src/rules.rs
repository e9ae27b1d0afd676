//! The naming rules of the runtime, applied at compile time. Each rule is a pure function
//! from the name to the reason it is rejected; the tests below run the runtime's own checks on
//! the same names and assert that both accept and reject exactly the same ones.

/// The longest event type name, as `krescent_core::event::MAX_TYPE_NAME_LEN`.
const MAX_TYPE_NAME_LEN: usize = 255;
/// The longest model name, as the runtime's `MAX_MODEL_NAME_LEN`.
const MAX_MODEL_NAME_LEN: usize = 255;
/// The longest tag key, as `krescent_core::event::MAX_TAG_KEY_LEN`.
const MAX_TAG_KEY_LEN: usize = 255;
/// The longest tag value, as `krescent_core::event::MAX_TAG_VALUE_LEN`.
const MAX_TAG_VALUE_LEN: usize = 1024;
/// The longest checkpoint bucket key, as `CheckpointBucket::MAX_KEY_LEN`.
const MAX_CHECKPOINT_KEY_LEN: usize = 255;

fn is_space_or_control(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

/// The rule of `krescent_core::event::validate_type_name`: 1 to 255 bytes, no whitespace, no
/// control characters.
pub(crate) fn type_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("it is empty".into())
    } else if name.len() > MAX_TYPE_NAME_LEN {
        Err(format!("it is longer than {MAX_TYPE_NAME_LEN} bytes"))
    } else if name.chars().any(is_space_or_control) {
        Err("it contains whitespace or a control character".into())
    } else {
        Ok(())
    }
}

/// The rule of the runtime's `validate_tag_key` (behind `krescent_core::Tag::new`): 1 to
/// 255 bytes, no `:`, no whitespace, no control characters.
pub(crate) fn tag_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        Err("it is empty".into())
    } else if key.len() > MAX_TAG_KEY_LEN {
        Err(format!("it is longer than {MAX_TAG_KEY_LEN} bytes"))
    } else if key.chars().any(|c| c == ':' || is_space_or_control(c)) {
        Err("keys may not contain `:`, whitespace or control characters".into())
    } else {
        Ok(())
    }
}

/// The rule of the runtime's `validate_tag_value` (behind `krescent_core::Tag::new`): at
/// most 1,024 bytes, no NUL. The derives see a literal value only in a projection's tag
/// filters (`tags(kind = "fixed")`); an event's tags take their values from fields at run
/// time, where `TagsBuilder` checks them.
pub(crate) fn tag_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_TAG_VALUE_LEN {
        Err(format!(
            "it is {} bytes long; tag values hold at most {MAX_TAG_VALUE_LEN} bytes",
            value.len()
        ))
    } else if value.contains('\0') {
        Err("it contains a NUL character".into())
    } else {
        Ok(())
    }
}

/// The rule of `krescent_core::checkpoint::storage::validate_model_name`: 1 to 255 bytes of
/// ASCII letters, digits, `.`, `_` and `-`, and not `.` or `..`.
pub(crate) fn model_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("it is empty".into())
    } else if name.len() > MAX_MODEL_NAME_LEN {
        Err(format!("it is longer than {MAX_MODEL_NAME_LEN} bytes"))
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Err("only ASCII letters, digits, `.`, `_` and `-` are allowed".into())
    } else if name == "." || name == ".." {
        Err("it is a path component".into())
    } else {
        Ok(())
    }
}

/// The rule of the checkpoint bucket's encoder (`KeyError`): 1 to 255 bytes.
pub(crate) fn checkpoint_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_CHECKPOINT_KEY_LEN {
        Err(format!("1 to {MAX_CHECKPOINT_KEY_LEN} bytes"))
    } else {
        Ok(())
    }
}

/// The derive's own rule for catalog names: non-empty, no whitespace, no control characters.
/// The runtime stores the catalog as given and has no rule of its own to agree with.
pub(crate) fn catalog(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().any(is_space_or_control) {
        Err("it must be non-empty, without whitespace or control characters".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use krescent_core::Tag;
    use krescent_core::checkpoint::CheckpointBucket;
    use krescent_core::checkpoint::storage::validate_model_name;
    use krescent_core::event::validate_type_name;

    /// Names every rule is tried on: the edges of each rule and the characters it treats
    /// specially.
    fn corpus() -> Vec<String> {
        let mut names: Vec<String> = [
            "",
            "a",
            "stock.added",
            "book-available_v2",
            "Stock.Added.V2",
            ".",
            "..",
            "...",
            "a..b",
            "stock added",
            " leading",
            "trailing ",
            "tab\there",
            "new\nline",
            "carriage\rreturn",
            "nul\0byte",
            "bell\u{7}",
            "delete\u{7f}",
            "c1\u{85}control",
            "no\u{a0}break",
            "ideographic\u{3000}space",
            "line\u{2028}separator",
            "zero\u{200b}width",
            "colon:key",
            ":",
            "a:",
            "path/segment",
            "back\\slash",
            "stock.ajouté",
            "日本語",
            "emoji🦀",
            "quote\"",
            "semi;colon",
            "plus+sign",
            "at@sign",
            "0",
            "-",
            "_",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for len in [254, 255, 256, 300, 1023, 1024, 1025, 3072] {
            names.push("a".repeat(len));
        }
        // The same around the tag value limit: 512 × 2 = 1,024 bytes, then 1,026.
        names.push("é".repeat(512));
        names.push("é".repeat(513));
        names.push(format!("{}é", "a".repeat(1023)));
        // Multi-byte characters around the byte limit: 127 × 2 = 254 bytes, then 256.
        names.push("é".repeat(127));
        names.push("é".repeat(128));
        names.push(format!("{}é", "a".repeat(253)));
        names.push(format!("{}é", "a".repeat(254)));
        names
    }

    /// Runs both checks on every name of the corpus and lists the names they disagree on.
    fn disagreements(
        derive: impl Fn(&str) -> Result<(), String>,
        runtime: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        corpus()
            .into_iter()
            .filter(|name| derive(name).is_ok() != runtime(name))
            .map(|name| format!("{name:?}"))
            .collect()
    }

    /// The corpus holds names that each rule accepts and names it rejects, so agreement is
    /// not agreement on one answer.
    fn accepts_and_rejects(rule: impl Fn(&str) -> Result<(), String>) -> (usize, usize) {
        let corpus = corpus();
        let accepted = corpus.iter().filter(|n| rule(n).is_ok()).count();
        (accepted, corpus.len() - accepted)
    }

    #[test]
    fn type_name_rule_matches_the_runtime() {
        let bad = disagreements(super::type_name, |n| validate_type_name(n).is_ok());
        assert!(bad.is_empty(), "the type-name rules disagree on {bad:?}");
        let (accepted, rejected) = accepts_and_rejects(super::type_name);
        assert!(accepted >= 10 && rejected >= 10, "{accepted} / {rejected}");
    }

    #[test]
    fn tag_key_rule_matches_the_runtime() {
        let bad = disagreements(super::tag_key, |k| Tag::new(k, "value").is_ok());
        assert!(bad.is_empty(), "the tag-key rules disagree on {bad:?}");
        let (accepted, rejected) = accepts_and_rejects(super::tag_key);
        assert!(accepted >= 10 && rejected >= 10, "{accepted} / {rejected}");
    }

    #[test]
    fn tag_value_rule_matches_the_runtime() {
        let bad = disagreements(super::tag_value, |v| Tag::new("key", v).is_ok());
        assert!(bad.is_empty(), "the tag-value rules disagree on {bad:?}");
        let (accepted, rejected) = accepts_and_rejects(super::tag_value);
        assert!(accepted >= 10 && rejected >= 4, "{accepted} / {rejected}");
    }

    #[test]
    fn tag_limits_match_the_runtime() {
        assert_eq!(
            super::MAX_TAG_KEY_LEN,
            krescent_core::event::MAX_TAG_KEY_LEN
        );
        assert_eq!(
            super::MAX_TAG_VALUE_LEN,
            krescent_core::event::MAX_TAG_VALUE_LEN
        );
    }

    #[test]
    fn model_name_rule_matches_the_runtime() {
        let bad = disagreements(super::model_name, |n| validate_model_name(n).is_ok());
        assert!(bad.is_empty(), "the model-name rules disagree on {bad:?}");
        let (accepted, rejected) = accepts_and_rejects(super::model_name);
        assert!(accepted >= 5 && rejected >= 10, "{accepted} / {rejected}");
    }

    #[test]
    fn checkpoint_key_rule_matches_the_runtime() {
        let encodes = |key: &str| {
            let mut bucket = CheckpointBucket::new();
            bucket.put_bool(key, true);
            bucket.encode().is_ok()
        };
        let bad = disagreements(super::checkpoint_key, encodes);
        assert!(
            bad.is_empty(),
            "the checkpoint-key rules disagree on {bad:?}"
        );
        let (accepted, rejected) = accepts_and_rejects(super::checkpoint_key);
        assert!(accepted >= 10 && rejected >= 3, "{accepted} / {rejected}");
    }

    #[test]
    fn catalog_rule_rejects_what_it_documents() {
        assert!(super::catalog("warehouse").is_ok());
        assert!(super::catalog("ware.house-2").is_ok());
        for name in [
            "",
            "ware house",
            "tab\t",
            "nul\0",
            "ideographic\u{3000}space",
        ] {
            assert!(super::catalog(name).is_err(), "{name:?} was accepted");
        }
    }
}
