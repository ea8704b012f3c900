//! Glob patterns for tool, resource and prompt names: `*` matches any run of characters
//! (including none), `?` exactly one; everything else matches itself.

/// Whether `text` matches `pattern`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Iterative matcher with single backtrack point: linear in practice, no recursion, so a
    // hostile name cannot blow the stack or take exponential time.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some('?') => {
                p += 1;
                t += 1;
            }
            Some(c) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn star_and_question_mark_match_as_documented() {
        assert!(glob_match("admin_*", "admin_reset"));
        assert!(glob_match("admin_*", "admin_"));
        assert!(!glob_match("admin_*", "user_admin_reset"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*_delete", "db_delete"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn pathological_patterns_finish_quickly() {
        let text = "a".repeat(10_000);
        assert!(!glob_match("*a*a*a*a*a*b", &text));
    }
}
