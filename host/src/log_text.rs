//! Untrusted text on its way into a log line, made one line, free of terminal control and
//! unambiguous ([`escape_control`]). A leaf: the audit line, Wasm providers' `log` calls and
//! their errors all go through it.
//!
//! Much of what reaches a log line is chosen by someone else: the path and method by the
//! client, the subject by a token's issuer or a Wasm provider, a denial's reason and every
//! `log` message by a Wasm provider. A line break in any of them would let its author write
//! a line of their choosing (a forged audit record) into a line-oriented log, and an ANSI
//! escape would drive the terminal of an operator tailing it. So every such field goes
//! through [`escape_control`], one function for every format: `tracing`'s text format writes
//! the message field raw and JSON escapes only C0 controls, so neither is enough alone.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` made safe to put in a log line: one line, no terminal control, unambiguous.
///
/// Escaped: `\` as `\\`; `\n`, `\r`, `\t` as themselves; every other C0 control, DEL
/// and every C1 control (NEL and CSI among them) as `\u{XX}`; and as `\u{XXXX}` the
/// Unicode line and paragraph separators (U+2028, U+2029, line breaks to JavaScript and
/// some log viewers) and the bidirectional overrides and isolates (U+202A–U+202E,
/// U+2066–U+2069), which reorder how a line reads on screen. Everything else is kept, so
/// ordinary text is returned as is, without copying.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{{{:02x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        let text = "GET /mcp/tools — ünïcode ok";
        assert!(matches!(escape_control(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn every_line_break_and_terminal_control_is_escaped() {
        let cases = [
            ("a\nb", "a\\nb"),
            ("a\r\nb", "a\\r\\nb"),
            ("a\tb", "a\\tb"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("nul\0", "nul\\u{00}"),
            ("del\u{7f}", "del\\u{7f}"),
            ("nel\u{85}csi\u{9b}", "nel\\u{85}csi\\u{9b}"),
            ("ls\u{2028}ps\u{2029}", "ls\\u{2028}ps\\u{2029}"),
            ("rlo\u{202e}fsi\u{2068}", "rlo\\u{202e}fsi\\u{2068}"),
            ("back\\slash", "back\\\\slash"),
        ];
        for (input, want) in cases {
            let got = escape_control(input);
            assert_eq!(got, want, "input {input:?}");
            assert!(!got.chars().any(needs_escape_except_backslash), "{got:?}");
        }
    }

    #[test]
    fn an_escaped_newline_cannot_be_confused_with_a_typed_backslash_n() {
        assert_ne!(escape_control("a\nb"), escape_control("a\\nb"));
    }

    fn needs_escape_except_backslash(c: char) -> bool {
        c != '\\' && needs_escape(c)
    }
}
