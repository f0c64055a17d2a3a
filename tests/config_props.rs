//! Property tests over the main.cf grammar and `$name` expansion: arbitrary input never
//! panics, and errors name the file and a line inside it.

use std::path::Path;

use postern::config::expand::{self, Mode};
use postern::config::maincf;
use proptest::prelude::*;

fn config_like() -> impl Strategy<Value = String> {
    // Lines built from the characters main.cf syntax cares about.
    let line = "[a-z_ =$#{}():?,.\\t\\r-]{0,40}";
    prop::collection::vec(line, 0..30).prop_map(|v| v.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn main_cf_never_panics(text in config_like()) {
        let path = Path::new("/etc/postfix/main.cf");
        match maincf::parse(&text, path) {
            Ok(m) => {
                for s in m.settings.values() {
                    prop_assert!(s.line >= 1 && s.line <= text.lines().count().max(1));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("/etc/postfix/main.cf"), "{}", msg);
            }
        }
    }

    #[test]
    fn main_cf_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (text, _) = postern::config::text::decode(&bytes);
        let _ = maincf::parse(&text, Path::new("main.cf"));
    }

    #[test]
    fn expansion_never_panics(pattern in "[a-z$(){}?:= <>!.0-9]{0,60}") {
        let lookup = |n: &str, _m: Mode| -> Option<String> {
            match n {
                "a" => Some("$b".into()),
                "b" => Some("x".into()),
                "loop" => Some("$loop".into()),
                _ => None,
            }
        };
        let e = expand::expand(&pattern, &lookup, true);
        if e.error {
            prop_assert!(!e.warnings.is_empty());
        }
        let _ = expand::referenced_names(&pattern);
    }
}
