//! PII scrubbing for `scrubPII`: e-mail addresses, phone numbers, IPv4 and
//! IPv6 addresses, credit card numbers (Luhn-checked), US social security
//! numbers, IBANs (checksum-checked) and MAC addresses are replaced by the
//! tokens daprd writes (`<EMAIL_ADDRESS>`, `<PHONE_NUMBER>`, `<IP>`,
//! `<CREDIT_CARD>`, `<US_SSN>`, `<IBAN>`, `<MAC_ADDRESS>`). Text inside an
//! `http(s)://` URL is left alone. Kinds are tried in order and a later
//! match that overlaps an earlier one is dropped, so a card number is never
//! half a phone number.

use regex::Regex;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

struct Kind {
    token: &'static str,
    pattern: Regex,
    /// Whether a match is really one (checksums, ranges).
    valid: fn(&str) -> bool,
}

fn re(p: &str) -> Regex {
    Regex::new(p).expect("the scrubber's patterns compile")
}

fn always(_: &str) -> bool {
    true
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

fn luhn(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &n)| {
            if i % 2 == 1 {
                let n = n * 2;
                if n > 9 { n - 9 } else { n }
            } else {
                n
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban(s: &str) -> bool {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let (head, tail) = s.split_at(4);
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn ssn(s: &str) -> bool {
    let d = digits(s);
    let area = d[0] * 100 + d[1] * 10 + d[2];
    let group = d[3] * 10 + d[4];
    let serial = d[5..].iter().fold(0, |a, n| a * 10 + n);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

fn ipv4(s: &str) -> bool {
    s.parse::<Ipv4Addr>().is_ok()
}

fn ipv6(s: &str) -> bool {
    s.parse::<Ipv6Addr>().is_ok()
}

fn phone(s: &str) -> bool {
    let n = digits(s).len();
    // An ISO date is not a phone number.
    static DATE: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"));
    (7..=15).contains(&n) && !DATE.is_match(s)
}

static KINDS: LazyLock<Vec<Kind>> = LazyLock::new(|| {
    vec![
        Kind {
            token: "<EMAIL_ADDRESS>",
            pattern: re(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
            valid: always,
        },
        Kind {
            token: "<IBAN>",
            pattern: re(r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)"),
            valid: iban,
        },
        Kind {
            token: "<CREDIT_CARD>",
            pattern: re(r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)"),
            valid: luhn,
        },
        Kind {
            token: "<US_SSN>",
            pattern: re(r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)"),
            valid: ssn,
        },
        Kind {
            token: "<MAC_ADDRESS>",
            pattern: re(r"(?-u:\b)[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}(?-u:\b)"),
            valid: always,
        },
        Kind {
            token: "<IP>",
            pattern: re(r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)"),
            valid: ipv4,
        },
        Kind {
            token: "<IP>",
            pattern: re(r"(?:[0-9A-Fa-f]{1,4}:|:)(?::?[0-9A-Fa-f]{1,4}|:){1,7}"),
            valid: ipv6,
        },
        Kind {
            token: "<PHONE_NUMBER>",
            pattern: re(
                r"(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{2,5}(?:[ .-]?[0-9]{2,5}){0,4}",
            ),
            valid: phone,
        },
    ]
});

static URL: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)https?://[^\s]+"));

/// Whether the match stands alone: not glued to letters, digits or `_`,
/// nor continued by a `.`, `:` or `-` and more of them (`1.2.3.4.5` holds
/// no address; a sentence's full stop after one is fine).
fn alone(text: &str, start: usize, end: usize) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let joiner = |c: Option<char>| matches!(c, Some('.' | ':' | '-'));
    let mut before = text[..start].chars().rev();
    let mut after = text[end..].chars();
    let (b1, b2) = (before.next(), before.next());
    let (a1, a2) = (after.next(), after.next());
    !(word(b1) || word(a1) || (joiner(b1) && word(b2)) || (joiner(a1) && word(a2)))
}

/// Spans that do not overlap, by start: whether `[s, e)` meets one is
/// a look at its two neighbours (so a text full of matches costs
/// `n log n`, not `n²`).
#[derive(Default)]
struct Spans(std::collections::BTreeMap<usize, (usize, &'static str)>);

impl Spans {
    fn overlaps(&self, s: usize, e: usize) -> bool {
        let before = self.0.range(..e).next_back();
        before.is_some_and(|(_, &(end, _))| end > s)
    }

    fn insert(&mut self, s: usize, e: usize, token: &'static str) {
        self.0.insert(s, (e, token));
    }
}

/// `text` with the PII in it replaced by tokens.
pub fn scrub(text: &str) -> String {
    let mut taken = Spans::default();
    let mut urls = Spans::default();
    for m in URL.find_iter(text) {
        urls.insert(m.start(), m.end(), "");
    }
    for kind in KINDS.iter() {
        for m in kind.pattern.find_iter(text) {
            let (s, e) = (m.start(), m.end());
            if (kind.valid)(m.as_str())
                && (kind.token == "<EMAIL_ADDRESS>" || alone(text, s, e))
                && !urls.overlaps(s, e)
                && !taken.overlaps(s, e)
            {
                taken.insert(s, e, kind.token);
            }
        }
    }
    if taken.0.is_empty() {
        return text.to_string();
    }
    let taken = taken.0.into_iter().map(|(s, (e, token))| (s, e, token));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e, token) in taken {
        out.push_str(&text[at..s]);
        out.push_str(token);
        at = e;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn each_kind_is_replaced_and_near_misses_stay() {
        let cases: &[(&str, &str)] = &[
            // e-mail
            (
                "write to ana.b+x@mail.example.org now",
                "write to <EMAIL_ADDRESS> now",
            ),
            ("my email is test@test.com", "my email is <EMAIL_ADDRESS>"),
            (
                "an @ sign alone, user@localhost",
                "an @ sign alone, user@localhost",
            ),
            // phone
            (
                "my phone number is +2222222222",
                "my phone number is <PHONE_NUMBER>",
            ),
            ("call (555) 123-4567 today", "call <PHONE_NUMBER> today"),
            ("call +44 20 7946 0958", "call <PHONE_NUMBER>"),
            ("room 1234, 12 chairs", "room 1234, 12 chairs"),
            ("on 2024-01-15 at noon", "on 2024-01-15 at noon"),
            // IP
            ("from 10.8.9.1", "from <IP>"),
            ("host 2001:db8::8a2e:370:7334 up", "host <IP> up"),
            ("loopback ::1 only", "loopback <IP> only"),
            (
                "version 1.2.3.4.5 and 300.1.1.1",
                "version 1.2.3.4.5 and 300.1.1.1",
            ),
            ("at 10:30:00 sharp", "at 10:30:00 sharp"),
            // credit card (Luhn)
            ("card 4111 1111 1111 1111 ok", "card <CREDIT_CARD> ok"),
            ("card 5500-0000-0000-0004", "card <CREDIT_CARD>"),
            ("card 4111111111111112", "card 4111111111111112"),
            // SSN
            ("ssn 078-05-1120", "ssn <US_SSN>"),
            ("not an ssn: 000-12-3456", "not an ssn: <PHONE_NUMBER>"),
            // IBAN (mod 97)
            (
                "pay GB82 WEST 1234 5698 7654 32 please",
                "pay <IBAN> please",
            ),
            ("pay DE89370400440532013000", "pay <IBAN>"),
            ("pay GB82WEST12345698765433", "pay GB82WEST12345698765433"),
            // MAC
            ("nic 00:1A:2B:3C:4D:5E", "nic <MAC_ADDRESS>"),
            // inside a URL: left alone
            (
                "see https://10.0.0.1/a?mail=a@b.io",
                "see https://10.0.0.1/a?mail=a@b.io",
            ),
            // nothing to do; other scripts untouched
            ("héllo wörld 日本", "héllo wörld 日本"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(&scrub(input), want, "scrubbing {input:?}");
        }
    }
}
