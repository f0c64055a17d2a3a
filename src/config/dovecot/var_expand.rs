//! Dovecot's `%` variables (`lib/var-expand.c`), one parser for every template Postern
//! expands the Dovecot way: userdb/passdb arguments and `auth_username_format`,
//! `pop3_uidl_format`, `pop3_logout_format`.
//!
//! A reference is `%` [`0`][WIDTH] [modifiers] KEY, KEY being one character or
//! `{long name}`; `%%` is a `%`. Modifiers: `L` lower case, `U` upper case, `X` the
//! (decimal) value in lower-case hex, as 2.3.19 prints it (`%08Xu` → `000000016b0ae6fb`);
//! Dovecot's other modifier letters (`E R H N M D T`) are read and not applied. A width
//! pads the value on the left, with zeros after a leading `0`.

/// Expand `template`: `value(key)` gives a variable's text (`key` is the character or the
/// long name), `None` for a key the caller does not know, which is written as
/// `unknown(key)` gives it.
pub fn var_expand(
    template: &str,
    value: impl Fn(&str) -> Option<String>,
    unknown: impl Fn(&str) -> String,
) -> String {
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let zero = chars.peek() == Some(&'0');
        let mut width = 0usize;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = width * 10 + d as usize;
            chars.next();
        }
        let (mut lower, mut upper, mut hex) = (false, false, false);
        while let Some(&m) = chars.peek() {
            match m {
                'L' => lower = true,
                'U' => upper = true,
                'X' => hex = true,
                'E' | 'R' | 'H' | 'N' | 'M' | 'D' | 'T' => {}
                _ => break,
            }
            chars.next();
        }
        let key = match chars.next() {
            None => break,
            Some('%') => {
                out.push('%');
                continue;
            }
            Some('{') => chars.by_ref().take_while(|&c| c != '}').collect(),
            Some(k) => k.to_string(),
        };
        let Some(mut v) = value(&key) else {
            out.push_str(&unknown(&key));
            continue;
        };
        if hex && let Ok(n) = v.parse::<u64>() {
            v = format!("{n:x}");
        }
        if lower {
            v = v.to_lowercase();
        } else if upper {
            v = v.to_uppercase();
        }
        for _ in v.chars().count()..width {
            out.push(if zero { '0' } else { ' ' });
        }
        out.push_str(&v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::var_expand;

    #[test]
    fn modifiers_width_and_unknown_keys() {
        let value = |k: &str| match k {
            "u" | "user" => Some("Alice".to_string()),
            "v" => Some("1795876603".to_string()),
            _ => None,
        };
        let unknown = |k: &str| format!("?{k}");
        let x = |t: &str| var_expand(t, value, unknown);
        assert_eq!(x("%08Xu"), "000Alice");
        assert_eq!(x("%08Xv"), "6b0ae6fb");
        assert_eq!(x("%Lu/%Uu/%{user}"), "alice/ALICE/Alice");
        assert_eq!(x("100%% %q %{nope}"), "100% ?q ?nope");
        assert_eq!(x("%X %% end"), "? % end");
        assert_eq!(x("%6u|"), " Alice|");
        assert_eq!(x("tail%"), "tail");
    }
}
