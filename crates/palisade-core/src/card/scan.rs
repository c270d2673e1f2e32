//! The single-pass byte scanner: the one definition of card data in Palisade. Core's masking of display text
//! and `palisade-redaction` (log formats, streams, tracing) both run it.
//!
//! The scanner only ever wakes up at an ASCII digit: every thing it looks for (a PAN, track data, a CVV or PIN
//! value) contains one, and labels are found by looking *back* from the digits. Between digits it skips eight
//! bytes per step with a SWAR test, so digit-free text costs a few instructions per eight bytes and is never
//! copied.
//!
//! At each digit it reads one *group run*: digit groups joined by a single space or dash (`4242 4242-4242 4242`).
//! Every window of consecutive groups holding 13–19 digits is a PAN candidate; a candidate counts when it passes
//! Luhn **and** the IIN/length table ([`brand`]). A single group longer than 19 digits is a long id, not a card,
//! and no window may include it. Overlapping candidates are merged, so a true PAN is never half-hidden behind a
//! false one next to it.

use super::luhn_valid;

/// The longest PAN.
pub const MAX_PAN: usize = 19;
/// The shortest PAN this scanner accepts (12-digit Maestro is out: see the crate docs).
pub const MIN_PAN: usize = 13;
/// Track 1 is at most 79 characters, sentinels included.
const MAX_TRACK1: usize = 79;
/// How far the scanner looks for the caret after a Track 1 name. The standard name is at most 26 characters,
/// but decoders and logs write longer and non-ASCII (UTF-8) names; the expiry and service code after the caret
/// must go with the rest, so the search allows for them.
const MAX_TRACK1_NAME: usize = 64;
/// Track 2 is at most 40 characters, sentinels included.
const MAX_TRACK2: usize = 40;
/// Bytes of separators (`"`, `:`, `=`, spaces) allowed between a label and its value.
const MAX_LABEL_GAP: usize = 6;

/// What a finding is. When findings overlap they merge, and the later variant here (the one that hides more)
/// decides how the merged range is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A primary account number (keeps the last four in mask formats).
    Pan,
    /// A labelled card verification value (CVV, CVC, CID, security code).
    Cvv,
    /// A labelled PIN or PIN block.
    Pin,
    /// Track 2 data (`;PAN=YYMM...?`).
    Track2,
    /// Track 1 data (`%BPAN^NAME^YYMM...?`).
    Track1,
}

/// A byte range to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// What was found.
    pub kind: Kind,
}

/// Card brands of the IIN table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Brand {
    /// Visa: 4, 13/16/19 digits.
    Visa,
    /// Mastercard: 51–55 and 2221–2720, 16 digits.
    Mastercard,
    /// American Express: 34, 37, 15 digits.
    Amex,
    /// Discover: 6011, 644–649, 65 and 622126–622925, 16–19 digits.
    Discover,
    /// Diners Club: 300–305, 36, 38–39, 14–19 digits.
    Diners,
    /// JCB: 3528–3589, 16–19 digits.
    Jcb,
    /// UnionPay: 62, 16–19 digits.
    UnionPay,
    /// Maestro: 50, 56–58, 639, 67, 13–19 digits.
    Maestro,
    /// UATP: 1, 15 digits.
    Uatp,
}

fn num(d: &[u8], n: usize) -> u32 {
    d[..n].iter().fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
}

/// The brand whose IIN range and length `digits` (ASCII digits, 13–19 of them) match, if any.
#[must_use]
pub fn brand(digits: &[u8]) -> Option<Brand> {
    let len = digits.len();
    if !(MIN_PAN..=MAX_PAN).contains(&len) {
        return None;
    }
    let p2 = num(digits, 2);
    let p3 = num(digits, 3);
    let p4 = num(digits, 4);
    let p6 = num(digits, 6);
    let long = (16..=19).contains(&len);
    match digits[0] {
        b'4' if matches!(len, 13 | 16 | 19) => Some(Brand::Visa),
        b'5' if (51..=55).contains(&p2) && len == 16 => Some(Brand::Mastercard),
        b'2' if (2221..=2720).contains(&p4) && len == 16 => Some(Brand::Mastercard),
        b'3' if (p2 == 34 || p2 == 37) && len == 15 => Some(Brand::Amex),
        b'3' if ((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39) && len >= 14 => Some(Brand::Diners),
        b'3' if (3528..=3589).contains(&p4) && long => Some(Brand::Jcb),
        b'6' if (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622_126..=622_925).contains(&p6)) && long => {
            Some(Brand::Discover)
        }
        b'6' if p2 == 62 && long => Some(Brand::UnionPay),
        b'6' if p3 == 639 || p2 == 67 => Some(Brand::Maestro),
        b'5' if p2 == 50 || (56..=58).contains(&p2) => Some(Brand::Maestro),
        b'1' if len == 15 => Some(Brand::Uatp),
        _ => None,
    }
}

/// True when `digits` is a PAN: Luhn-valid and in the IIN/length table.
#[must_use]
pub fn is_pan(digits: &[u8]) -> bool {
    brand(digits).is_some() && luhn_valid(digits)
}

#[inline]
fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// The length of the digit-group separator at `p`, 0 when there is none: a space or a dash, their typographic
/// forms (no-break space U+00A0, en dash U+2013, em dash U+2014), a URL-encoded space (`%20`, and `+` in a query
/// string or form body), and the escaped forms of those characters that Rust's `{:?}` and JSON write
/// (`\u{a0}`, `\u00a0`, `\u2013`…). Tabs, double and thin spaces, dots, slashes and underscores are not: cards
/// are not written with them, and measured on look-alike text they join columns, dates, addresses and paths into
/// false cards (docs/redaction.md).
#[inline]
fn sep_len(b: &[u8], p: usize) -> usize {
    match b[p] {
        b' ' | b'-' | b'+' => 1,
        0xC2 if b.get(p + 1) == Some(&0xA0) => 2,
        0xE2 if b.get(p + 1) == Some(&0x80) && matches!(b.get(p + 2), Some(0x93 | 0x94)) => 3,
        b'%' if b.get(p + 1) == Some(&b'2') && b.get(p + 2) == Some(&b'0') => 3,
        b'\\' => escaped_separator(b, p),
        _ => 0,
    }
}

/// The length of an escaped separator at `p` (a backslash): `\u{a0}` / `\u{2013}` / `\u{2014}` as Rust's `{:?}`
/// writes them, `\u00a0` / `\u2013` / `\u2014` (any case) as JSON does; 0 for anything else. Rare: kept out of
/// line so `sep_len`, on the path of every digit group, stays small.
#[cold]
#[inline(never)]
fn escaped_separator(b: &[u8], p: usize) -> usize {
    if b.get(p + 1) != Some(&b'u') {
        return 0;
    }
    let (hex, len) = match b.get(p + 2) {
        Some(b'{') => {
            let digits = b[p + 3..].iter().take(7).take_while(|c| c.is_ascii_hexdigit()).count();
            if b.get(p + 3 + digits) != Some(&b'}') {
                return 0;
            }
            (&b[p + 3..p + 3 + digits], digits + 4)
        }
        _ if b.len() >= p + 6 => (&b[p + 2..p + 6], 6),
        _ => return 0,
    };
    let mut code = 0u32;
    for &c in hex {
        let Some(v) = char::from(c).to_digit(16) else { return 0 };
        code = code * 16 + v;
    }
    if matches!(code, 0xA0 | 0x2013 | 0x2014 | 0x20 | 0x2D) { len } else { 0 }
}

/// Where the next group of a run starts when a separator at `p` is followed by a digit.
#[inline]
fn next_group(b: &[u8], p: usize) -> Option<usize> {
    if p >= b.len() {
        return None;
    }
    let l = sep_len(b, p);
    (l > 0 && p + l < b.len() && is_digit(b[p + l])).then_some(p + l)
}

/// Walks the bytes of a PAN finding, telling the card's digits from the separators between them (the `2` and
/// `0` of a `%20`, the `00a0` of a `\u00a0`, are not card digits): `f(byte, is_card_digit)` for each byte, in
/// order.
pub fn pan_bytes(region: &[u8], mut f: impl FnMut(u8, bool)) {
    let mut i = 0;
    while i < region.len() {
        let sep = if is_digit(region[i]) { 0 } else { sep_len(region, i) };
        if sep > 0 {
            region[i..i + sep].iter().for_each(|&c| f(c, false));
            i += sep;
        } else {
            f(region[i], is_digit(region[i]));
            i += 1;
        }
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

#[inline]
fn word(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// Marks (high bit of the byte) the bytes of `x` that are ASCII digits. Exact for the lowest marked byte, which
/// is all the caller uses (a borrow can only mark bytes above a true digit).
#[inline]
fn digit_mask(x: u64) -> u64 {
    let t = x ^ (0x30 * LO);
    t.wrapping_sub(10 * LO) & !t & HI
}

/// The position of the first ASCII digit at or after `i`.
#[inline]
pub fn next_digit(b: &[u8], mut i: usize) -> Option<usize> {
    while i + 16 <= b.len() {
        let m0 = digit_mask(word(b, i));
        if m0 != 0 {
            return Some(i + (m0.trailing_zeros() / 8) as usize);
        }
        let m1 = digit_mask(word(b, i + 8));
        if m1 != 0 {
            return Some(i + 8 + (m1.trailing_zeros() / 8) as usize);
        }
        i += 16;
    }
    while i < b.len() {
        if is_digit(b[i]) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// True when `b` contains an ASCII digit (the scanner's only trigger): text without one is always clean.
#[must_use]
#[inline]
pub fn has_digit(b: &[u8]) -> bool {
    next_digit(b, 0).is_some()
}

const CVV_LABELS: &[&[u8]] = &[
    b"cvv",
    b"cvv2",
    b"cvc",
    b"cvc2",
    b"cid",
    b"csc",
    b"cvn",
    b"security code",
    b"security_code",
    b"security-code",
    b"securitycode",
    b"card verification code",
    b"verification_code",
];

const PIN_LABELS: &[&[u8]] = &[b"pin", b"pin_block", b"pinblock", b"pin block", b"pin-block", b"pin_code", b"pincode"];

/// What may stand between a label and its value: spaces and line breaks, quotes, `:` and `=`, the closing `]` of a
/// form-encoded field (`card[cvc]=123`) or `>` of an XML element (`<cvv>123</cvv>`), a `+` (a form-encoded space)
/// and the backslash of an escaped quote (`\"cvc\":\"123\"` as `{:?}` writes a JSON string).
#[inline]
fn label_gap(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'\'' | b':' | b'=' | b']' | b'>' | b'+' | b'\\')
}

/// The byte a percent-escape (`%5D`) or a backslash escape (`\n`) ending right before `j` stands for, and its
/// length.
#[inline]
fn escape_before(b: &[u8], j: usize) -> Option<(u8, usize)> {
    if j >= 2 && b[j - 2] == b'\\' {
        let c = match b[j - 1] {
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            _ => return None,
        };
        return Some((c, 2));
    }
    if j >= 3 && b[j - 3] == b'%' {
        let hi = char::from(b[j - 2]).to_digit(16)?;
        let lo = char::from(b[j - 1]).to_digit(16)?;
        return Some((u8::try_from(hi * 16 + lo).ok()?, 3));
    }
    None
}

/// True when one of `labels` ends right before the separators in front of `s`. A label counts on its own
/// (`cvv`, `card_cvv`, `card[cvc]`, `<cvv>`, `card%5Bcvc%5D`, `\"cvc\"`) or as a camel-case word of a longer
/// name (`cardCvv`, `CardCVC`, `cardSecurityCode`, `cardPin`), in any case; not as the tail of a lowercase word
/// (`acid`, `spin`).
fn label_before(b: &[u8], s: usize, labels: &[&[u8]]) -> bool {
    // At most MAX_LABEL_GAP separators (an escape counts as one, backslashes as none), in at most 4× the bytes.
    // Plain separators first: the common case stops at a letter that is no escape's end.
    let mut j = s;
    let mut units = 0;
    while j > 0 && units < MAX_LABEL_GAP && s - j < 4 * MAX_LABEL_GAP {
        let c = b[j - 1];
        if label_gap(c) {
            units += usize::from(c != b'\\');
            j -= 1;
        } else if c.is_ascii_alphanumeric()
            && let Some((e, len)) = escape_before(b, j)
            && label_gap(e)
        {
            units += 1;
            j -= len;
        } else {
            break;
        }
    }
    if j == s || j == 0 {
        return false;
    }
    // Every label ends in one of these bytes: most values (`status=200`) are turned away here.
    let last = b[j - 1].to_ascii_lowercase();
    if !matches!(last, b'v' | b'2' | b'c' | b'd' | b'n' | b'e' | b'k') {
        return false;
    }
    labels.iter().any(|label| {
        let n = label.len();
        if j < n {
            return false;
        }
        let start = j - n;
        label[n - 1] == last
            && b[start..j].eq_ignore_ascii_case(label)
            && (start == 0
                || !b[start - 1].is_ascii_alphabetic()
                || (b[start - 1].is_ascii_lowercase() && b[start].is_ascii_uppercase())
                || escape_before(b, start).is_some())
    })
}

/// The scanner's output buffer, merging overlapping findings as they arrive.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// The findings, in order, never overlapping.
    pub list: Vec<Finding>,
}

impl Findings {
    fn push(&mut self, mut f: Finding) {
        while let Some(last) = self.list.last() {
            if last.end > f.start && f.end > last.start {
                f.start = f.start.min(last.start);
                f.end = f.end.max(last.end);
                f.kind = f.kind.max(last.kind);
                self.list.pop();
            } else {
                break;
            }
        }
        // Findings arrive in order of their end; a finding may start before the previous one only if they overlap
        // (merged above), so the list stays sorted.
        self.list.push(f);
    }
}

/// What to look for besides PANs.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Labelled CVV/CVC values.
    pub cvv: bool,
    /// Track 1 and Track 2 data.
    pub track: bool,
    /// Labelled PINs and PIN blocks.
    pub pin: bool,
}

/// Scans `b[from..]` (bytes before `from` are only read as context for labels) and appends findings.
pub fn scan(b: &[u8], from: usize, rules: Rules, out: &mut Findings) {
    let first = out.list.len();
    let mut i = from;
    while let Some(s) = next_digit(b, i) {
        i = group_run(b, s, rules, out);
    }
    // A track's `%B` or a PIN block's leading letters may lie in the context before `from`, already written out;
    // what lies from `from` on is still replaced.
    for f in &mut out.list[first..] {
        f.start = f.start.max(from);
    }
}

/// A group inside the sliding window of a group run.
#[derive(Clone, Copy, Default)]
struct Group {
    start: usize,
    end: usize,
}

/// Reads the group run starting at `s` (a digit), records findings, returns where scanning resumes.
fn group_run(b: &[u8], s: usize, rules: Rules, out: &mut Findings) -> usize {
    let n = b.len();
    let mut p = s;
    while p < n && is_digit(b[p]) {
        p += 1;
    }
    let g = Group { start: s, end: p };
    let mut resume = p;
    if let Some(end) = labelled(b, g, rules, out) {
        resume = end;
    }
    if next_group(b, p).is_none() {
        // A lone group: the common case (ids, amounts, timestamps), decided without the window.
        if rules.track
            && let Some(f) = track(b, g)
        {
            resume = resume.max(f.end);
            out.push(f);
            return resume;
        }
        if (MIN_PAN..=MAX_PAN).contains(&(p - s)) && is_pan(&b[s..p]) {
            out.push(Finding { start: s, end: p, kind: Kind::Pan });
        }
        return resume;
    }
    // Dates, phone numbers, versions: runs with fewer digits than a card end here, without the window.
    let mut q = p;
    let mut digits = p - s;
    while digits < MIN_PAN {
        let Some(next) = next_group(b, q) else { break };
        q = next;
        while q < n && is_digit(b[q]) {
            q += 1;
            digits += 1;
        }
    }
    if digits < MIN_PAN {
        return resume.max(q);
    }
    resume.max(grouped_run(b, g, rules, out))
}

/// Room for the window's groups and digits before they are moved back to the front of their buffers.
const WINDOW_ROOM: usize = 4 * MAX_PAN;

/// True when a PAN of `len` digits can start with `first`: the lengths of [`brand`]'s table by first digit. A
/// check of two bytes that turns away most windows before the table is read.
#[inline]
fn pan_length_fits(first: u8, len: usize) -> bool {
    match first {
        b'1' => len == 15,
        b'2' => len == 16,
        b'4' => matches!(len, 13 | 16 | 19),
        b'3' => len >= 14,
        b'5' | b'6' => true,
        _ => false,
    }
}

/// A digit's Luhn contribution when doubled.
const DOUBLED: [u16; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];

/// Luhn prefix sums over a digit buffer: entry `i` holds, for the digits before position `i`, the plain sum of
/// those at even positions, at odd positions, then the doubled sum of those at even and at odd positions. The
/// Luhn sum of any slice is then two subtractions, whatever its length.
type LuhnSums = [[u16; 4]; WINDOW_ROOM + 1];

#[inline]
fn luhn_push(sums: &mut LuhnSums, i: usize, digit: u8) {
    let v = digit - b'0';
    let mut next = sums[i];
    next[i & 1] += u16::from(v);
    next[2 + (i & 1)] += DOUBLED[usize::from(v)];
    sums[i + 1] = next;
}

/// True when `digits[from..to]` passes Luhn, from the prefix sums: counted from the right, the second, fourth, …
/// digits are doubled, which are the positions of `to`'s parity.
#[inline]
fn luhn_slice(sums: &LuhnSums, from: usize, to: usize) -> bool {
    let q = to & 1;
    let sum = (sums[to][2 + q] - sums[from][2 + q]) + (sums[to][1 - q] - sums[from][1 - q]);
    sum.is_multiple_of(10)
}

/// The window search over a run of two or more groups starting with `first`; returns the run's end.
///
/// The window holds the latest groups whose digits, together, are at most [`MAX_PAN`] (the only windows that
/// can hold a PAN), and their digits side by side in one buffer with Luhn prefix sums, so every candidate window
/// is a slice of it checked in constant time: nothing is copied per candidate, and a digit-dense run
/// (`1 1 1 …`) costs a few operations per group.
fn grouped_run(b: &[u8], first: Group, rules: Rules, out: &mut Findings) -> usize {
    let n = b.len();
    let mut starts = [0usize; WINDOW_ROOM];
    let mut lens = [0usize; WINDOW_ROOM];
    let mut digits = [0u8; WINDOW_ROOM];
    let mut sums: LuhnSums = [[0; 4]; WINDOW_ROOM + 1];
    // The window is groups `lo..hi` and their digits `dlo..dhi`.
    let (mut lo, mut hi, mut dlo, mut dhi) = (0, 0, 0, 0);
    let mut g = first;
    loop {
        let glen = g.end - g.start;
        if glen > MAX_PAN {
            // A long id: no window may include it.
            (lo, hi, dlo, dhi) = (0, 0, 0, 0);
        } else {
            while dhi - dlo + glen > MAX_PAN {
                dlo += lens[lo];
                lo += 1;
            }
            if hi == WINDOW_ROOM || dhi + glen > WINDOW_ROOM {
                starts.copy_within(lo..hi, 0);
                lens.copy_within(lo..hi, 0);
                digits.copy_within(dlo..dhi, 0);
                (hi, dhi) = (hi - lo, dhi - dlo);
                (lo, dlo) = (0, 0);
                for (i, &d) in digits[..dhi].iter().enumerate() {
                    luhn_push(&mut sums, i, d);
                }
            }
            starts[hi] = g.start;
            lens[hi] = glen;
            hi += 1;
            for &d in &b[g.start..g.end] {
                digits[dhi] = d;
                luhn_push(&mut sums, dhi, d);
                dhi += 1;
            }
            // Windows ending at this group, longest first.
            let mut at = dlo;
            for k in lo..hi {
                let d = dhi - at;
                if d < MIN_PAN {
                    break;
                }
                if pan_length_fits(digits[at], d) && luhn_slice(&sums, at, dhi) && brand(&digits[at..dhi]).is_some() {
                    out.push(Finding { start: starts[k], end: g.end, kind: Kind::Pan });
                }
                at += lens[k];
            }
        }
        if let Some(next) = next_group(b, g.end) {
            let mut q = next;
            while q < n && is_digit(b[q]) {
                q += 1;
            }
            g = Group { start: next, end: q };
        } else {
            // Track data may follow a run (`qty 2 4111…=2512…`): its PAN is the run's last group.
            if rules.track
                && let Some(f) = track(b, g)
            {
                let end = f.end;
                out.push(f);
                return end;
            }
            return g.end;
        }
    }
}

/// A labelled CVV or PIN whose value starts at group `g` (the first group of a run). Returns the end of the
/// finding.
fn labelled(b: &[u8], g: Group, rules: Rules, out: &mut Findings) -> Option<usize> {
    let n = b.len();
    let glen = g.end - g.start;
    let alnum_after = g.end < n && b[g.end].is_ascii_alphanumeric();
    if rules.cvv && (3..=4).contains(&glen) && !alnum_after && label_before(b, g.start, CVV_LABELS) {
        out.push(Finding { start: g.start, end: g.end, kind: Kind::Cvv });
        return Some(g.end);
    }
    if rules.pin && glen <= 16 {
        // The value is a hex token (a PIN block) or 4–12 digits (a clear PIN); it may start with hex letters.
        let mut ts = g.start;
        while ts > 0 && g.start - ts < 16 && b[ts - 1].is_ascii_hexdigit() {
            ts -= 1;
        }
        // A label needs a separator right before the value.
        if ts == 0 || !label_gap(b[ts - 1]) {
            return None;
        }
        let mut te = g.end;
        while te < n && te - ts <= 16 && b[te].is_ascii_hexdigit() {
            te += 1;
        }
        if te < n && b[te].is_ascii_alphanumeric() {
            return None;
        }
        let len = te - ts;
        let all_digits = ts == g.start && te == g.end;
        let ok = (all_digits && (4..=12).contains(&len)) || len == 16;
        if ok && label_before(b, ts, PIN_LABELS) {
            out.push(Finding { start: ts, end: te, kind: Kind::Pin });
            return Some(te);
        }
    }
    None
}

/// Track 1 (`%B` PAN `^` name `^` data `?`) or Track 2 (`;` PAN `=` data `?`) around the lone group `g`.
fn track(b: &[u8], g: Group) -> Option<Finding> {
    let n = b.len();
    let glen = g.end - g.start;
    if !(12..=MAX_PAN).contains(&glen) || g.end >= n {
        return None;
    }
    let digits = &b[g.start..g.end];
    match b[g.end] {
        b'^' => {
            let has_b = g.start > 0 && b[g.start - 1].eq_ignore_ascii_case(&b'B');
            let has_pct = has_b && g.start > 1 && b[g.start - 2] == b'%';
            if !(if has_pct { luhn_valid(digits) } else { is_pan(digits) }) {
                return None;
            }
            let start = g.start - usize::from(has_b) - usize::from(has_pct);
            // Name: up to the second caret, any printable text (UTF-8 included), longer than the standard's 26.
            let mut q = g.end + 1;
            let name_limit = n.min(q + MAX_TRACK1_NAME);
            while q < name_limit && b[q] != b'^' && (b[q] >= 0x20 && b[q] != 0x7f) {
                q += 1;
            }
            if q < name_limit && b[q] == b'^' {
                q += 1;
                // Expiry, service code and discretionary data, up to the end sentinel.
                let limit = n.min(q + MAX_TRACK1);
                while q < limit && b[q] != b'?' && b[q].is_ascii_graphic() && !matches!(b[q], b'"' | b',' | b'&') {
                    q += 1;
                }
                if q < n && b[q] == b'?' {
                    q += 1;
                }
            }
            Some(Finding { start, end: q, kind: Kind::Track1 })
        }
        // `=` is the standard separator; `D` is how EMV (tag 57) and many readers write it.
        b'=' | b'D' => {
            let has_semi = g.start > 0 && b[g.start - 1] == b';';
            if !(if has_semi { luhn_valid(digits) } else { is_pan(digits) }) {
                return None;
            }
            let start = g.start - usize::from(has_semi);
            let limit = n.min(start + MAX_TRACK2);
            let mut q = g.end + 1;
            while q < limit && is_digit(b[q]) {
                q += 1;
            }
            if !has_semi && q - (g.end + 1) < 4 {
                return None;
            }
            if q < n && b[q] == b'?' {
                q += 1;
            }
            Some(Finding { start, end: q, kind: Kind::Track2 })
        }
        // Track 1 URL-encoded, as a query string or form body carries it: `%25B` PAN `%5E` name `%5E` data `%3F`
        // (the name's own bytes percent-encoded or `+` for a space).
        b'%' if percent_is(b, g.end, b"5E") => {
            let has_b = g.start > 0 && b[g.start - 1].eq_ignore_ascii_case(&b'B');
            let has_pct = has_b && g.start >= 4 && percent_is(b, g.start - 4, b"25");
            if !(if has_pct { luhn_valid(digits) } else { is_pan(digits) }) {
                return None;
            }
            let start = g.start - usize::from(has_b) - 3 * usize::from(has_pct);
            // What a form encoder leaves of the name and data: letters, digits, `%XX`, `+` and `.-*_`.
            let encoded = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'%' | b'+' | b'.' | b'-' | b'*' | b'_');
            let mut q = g.end + 3;
            let name_limit = n.min(q + 3 * MAX_TRACK1_NAME);
            while q < name_limit && !percent_is(b, q, b"5E") && encoded(b[q]) {
                q += 1;
            }
            if q < name_limit && percent_is(b, q, b"5E") {
                q += 3;
                let limit = n.min(q + 3 * MAX_TRACK1);
                while q < limit && !percent_is(b, q, b"3F") && encoded(b[q]) {
                    q += 1;
                }
                if percent_is(b, q, b"3F") {
                    q += 3;
                }
            }
            Some(Finding { start, end: q, kind: Kind::Track1 })
        }
        // Track 2 URL-encoded, as a query string or form body carries it: `%3B` PAN `%3D` data `%3F`.
        b'%' if percent_is(b, g.end, b"3D") => {
            let has_semi = g.start >= 3 && percent_is(b, g.start - 3, b"3B");
            if !(if has_semi { luhn_valid(digits) } else { is_pan(digits) }) {
                return None;
            }
            let start = if has_semi { g.start - 3 } else { g.start };
            let limit = n.min(start + 3 * MAX_TRACK2);
            let mut q = g.end + 3;
            while q < limit && is_digit(b[q]) {
                q += 1;
            }
            if !has_semi && q - (g.end + 3) < 4 {
                return None;
            }
            if percent_is(b, q, b"3F") {
                q += 3;
            }
            Some(Finding { start, end: q, kind: Kind::Track2 })
        }
        _ => None,
    }
}

/// True when `b[at..]` starts with `%` and the two hex digits `hex` (in any case).
fn percent_is(b: &[u8], at: usize, hex: &[u8; 2]) -> bool {
    b.get(at) == Some(&b'%') && b.get(at + 1..at + 3).is_some_and(|h| h.eq_ignore_ascii_case(hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Rules = Rules { cvv: true, track: true, pin: true };

    fn kinds(s: &str) -> Vec<(String, Kind)> {
        let mut f = Findings::default();
        scan(s.as_bytes(), 0, ALL, &mut f);
        f.list.iter().map(|f| (s[f.start..f.end].to_owned(), f.kind)).collect()
    }

    #[test]
    fn next_digit_finds_the_first_digit_everywhere() {
        let mut v = vec![b'a'; 70];
        assert_eq!(next_digit(&v, 0), None);
        for pos in 0..70 {
            v[pos] = b'7';
            assert_eq!(next_digit(&v, 0), Some(pos));
            assert_eq!(next_digit(&v, pos + 1), None);
            v[pos] = 0xff;
            assert_eq!(next_digit(&v, 0), None);
            v[pos] = b'/';
            assert_eq!(next_digit(&v, 0), None);
            v[pos] = b':';
            assert_eq!(next_digit(&v, 0), None);
            v[pos] = b'a';
        }
        v[3] = b'0';
        v[4] = b'9';
        assert_eq!(next_digit(&v, 0), Some(3));
    }

    /// Issue 16, finding 8: labels in camel case, form encoding, XML and across a line break.
    #[test]
    fn labels_in_every_spelling() {
        for (text, value, kind) in [
            ("cardCvv=123", "123", Kind::Cvv),
            ("CardCVC: 456", "456", Kind::Cvv),
            ("cardCvc2=123", "123", Kind::Cvv),
            (r#"{"cardCvc":"123"}"#, "123", Kind::Cvv),
            ("cardSecurityCode=321", "321", Kind::Cvv),
            ("cardPin=1234", "1234", Kind::Pin),
            ("card[cvc]=123&card[number]=x", "123", Kind::Cvv),
            ("cvv:\n123", "123", Kind::Cvv),
            ("cvv:\r\n123", "123", Kind::Cvv),
            ("<cvv>123</cvv>", "123", Kind::Cvv),
            ("CVV2 = 4567", "4567", Kind::Cvv),
        ] {
            assert_eq!(kinds(text), vec![(value.to_owned(), kind)], "{text:?}");
        }
        // The tail of a lowercase word is not a label.
        for text in ["acid: 123", "placid=123", "spin: 1234", "lucid 999", "status=200", "id:123"] {
            assert!(kinds(text).is_empty(), "{text:?}: {:?}", kinds(text));
        }
    }

    /// Labels and cards as `{:?}`, JSON string escapes and URL/form encoding write them: a value behind an
    /// escaped quote, a percent-encoded bracket or a `+`, a PAN grouped with escaped or `+` separators.
    #[test]
    fn escaped_and_encoded_text() {
        for (text, value, kind) in [
            (r#"{\"cvc\":\"123\"}"#, "123", Kind::Cvv),
            (r#"\\\"cvv\\\": \\\"4567\\\""#, "4567", Kind::Cvv),
            (r#"ChargeRequest { note: "x\ncvv: 123" }"#, "123", Kind::Cvv),
            ("card%5Bcvc%5D=123&card%5Bnumber%5D=x", "123", Kind::Cvv),
            ("card%5bcvc%5d=123", "123", Kind::Cvv),
            ("cvv%3D123", "123", Kind::Cvv),
            ("cvv:+123", "123", Kind::Cvv),
            ("card%5Bpin%5D=1234", "1234", Kind::Pin),
            (r#"{\"pin_block\":\"AB12CD34EF567890\"}"#, "AB12CD34EF567890", Kind::Pin),
        ] {
            assert_eq!(kinds(text), vec![(value.to_owned(), kind)], "{text:?}");
        }
        for (text, pan) in [
            ("n=4242+4242+4242+4242&x=1", "4242+4242+4242+4242"),
            (r"4111\u{a0}1111\u{a0}1111\u{a0}1111", r"4111\u{a0}1111\u{a0}1111\u{a0}1111"),
            (r"4111\u00A01111\u00a01111\u00a01111", r"4111\u00A01111\u00a01111\u00a01111"),
            (r"4111\u20131111\u{2014}1111\u00201111", r"4111\u20131111\u{2014}1111\u00201111"),
        ] {
            assert_eq!(kinds(text), vec![(pan.to_owned(), Kind::Pan)], "{text:?}");
            let mut digits = Vec::new();
            pan_bytes(pan.as_bytes(), |c, d| {
                if d {
                    digits.push(c);
                }
            });
            assert_eq!(digits.len(), 16, "{pan}: the escapes' hex digits are not card digits");
        }
        // Escapes are not labels of their own, and do not make a word's tail one.
        for text in [r#"{\"acid\":\"123\"}"#, "x%5Bspin%5D=1234", r"\u{a0}123", r"a\nb 123"] {
            assert!(kinds(text).is_empty(), "{text:?}: {:?}", kinds(text));
        }
    }

    /// Issue 16, finding 9: track data goes whole, with its expiry and service code.
    #[test]
    fn tracks_go_whole() {
        let t2 = ";4111111111111111D25121010000000000?";
        assert_eq!(kinds(&format!("x {t2} y")), vec![(t2.to_owned(), Kind::Track2)]);
        let t2_bare = "4111111111111111D2512101000";
        assert_eq!(kinds(&format!("t2 {t2_bare} end")), vec![(t2_bare.to_owned(), Kind::Track2)]);
        // After other digits in one run (a quantity, a line number), the track still goes whole.
        let t2_eq = "4111111111111111=2512101000";
        assert_eq!(kinds(&format!("qty 2 {t2_eq}")), vec![(t2_eq.to_owned(), Kind::Track2)]);
        let long_name = "%B4111111111111111^LONGFAMILYNAMEOFTHEHOLDER/FIRSTNAMES MR^2512101000000000?";
        assert_eq!(kinds(&format!("t1 {long_name} end")), vec![(long_name.to_owned(), Kind::Track1)]);
        // URL-encoded, in a query string or a form body: the expiry and service code go with the PAN.
        let t2_url = "%3B4111111111111111%3D25121010000000000%3F";
        assert_eq!(kinds(&format!("track2={t2_url}&x=1")), vec![(t2_url.to_owned(), Kind::Track2)]);
        let t2_url_bare = "4111111111111111%3d2512101000";
        assert_eq!(kinds(&format!("t={t2_url_bare}&x=1")), vec![(t2_url_bare.to_owned(), Kind::Track2)]);
        let utf8_name = "%B4111111111111111^MÜLLER/JÖRG^2512101?";
        assert_eq!(kinds(&format!("t1 {utf8_name} end")), vec![(utf8_name.to_owned(), Kind::Track1)]);
        // Track 1 URL-encoded: the name, expiry, service code and discretionary data go with the PAN.
        let t1_url = "%25B4111111111111111%5EDOE%2FJOHN+MR%5E25121010000000000%3F";
        assert_eq!(kinds(&format!("track1={t1_url}&x=1")), vec![(t1_url.to_owned(), Kind::Track1)]);
        let t1_url_lower = "%25b4111111111111111%5eDOE%2fJ%5e2512101000%3f";
        assert_eq!(kinds(&format!("t={t1_url_lower}")), vec![(t1_url_lower.to_owned(), Kind::Track1)]);
    }

    /// The window search's pre-filter never turns away a length the IIN table accepts (every 6-digit prefix,
    /// every PAN length).
    #[test]
    fn the_length_prefilter_agrees_with_the_iin_table() {
        let mut digits = [b'0'; MAX_PAN];
        for prefix in 0..1_000_000u32 {
            let text = format!("{prefix:06}");
            digits[..6].copy_from_slice(text.as_bytes());
            for len in MIN_PAN..=MAX_PAN {
                if brand(&digits[..len]).is_some() {
                    assert!(pan_length_fits(digits[0], len), "{text} length {len}");
                }
            }
        }
    }

    #[test]
    fn every_label_ends_in_a_byte_the_fast_reject_lets_through() {
        for l in CVV_LABELS.iter().chain(PIN_LABELS) {
            let last = l[l.len() - 1];
            assert!(matches!(last, b'v' | b'2' | b'c' | b'd' | b'n' | b'e' | b'k'), "{}", String::from_utf8_lossy(l));
        }
    }

    #[test]
    fn iin_table() {
        let yes = [
            "4111111111111111",
            "4222222222222",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "371449635398431",
            "6011111111111117",
            "6011000990139424",
            "30569309025904",
            "38520000023237",
            "3566002020360505",
            "6200000000000005",
            "6205500000000000004",
            "6759649826438453",
            "5018000000000009",
            "122000000000003",
            "6445644564456445",
        ];
        for p in yes {
            assert!(is_pan(p.as_bytes()), "{p}");
        }
        // Luhn-valid but outside the table: a 13-digit millisecond timestamp, a 16-digit id starting with 9.
        for p in ["1700000000004", "9999999999999995", "5900000000000018"] {
            assert!(luhn_valid(p.as_bytes()), "{p}");
            assert!(!is_pan(p.as_bytes()), "{p}");
        }
        assert_eq!(brand(b"2720990000000000"), Some(Brand::Mastercard));
        assert_eq!(brand(b"2721000000000000"), None);
        assert_eq!(brand(b"6221260000000000"), Some(Brand::Discover));
        assert_eq!(brand(b"6229250000000000"), Some(Brand::Discover));
        assert_eq!(brand(b"6229260000000000"), Some(Brand::UnionPay));
    }

    #[test]
    fn finds_pans_in_every_disguise() {
        for s in [
            "pan=4242424242424242x",
            "id_4242424242424242",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "{\"n\":\"4242424242424242\"}",
            "https://x/?card=4242424242424242&a=b",
        ] {
            let k = kinds(s);
            assert_eq!(k.len(), 1, "{s}: {k:?}");
            assert_eq!(k[0].1, Kind::Pan, "{s}");
            assert!(k[0].0.ends_with("4242"), "{s}");
        }
        // longer runs are not cards; a neighbour number does not hide the card
        assert!(kinds("42424242424242424242").is_empty());
        assert_eq!(kinds("order 7 4242 4242 4242 4242").len(), 1);
        assert_eq!(kinds("12345678901234567890 4111111111111111")[0].0, "4111111111111111");
        assert!(kinds("ts=1700000000000 id=1700000000004").is_empty());
    }

    #[test]
    fn tracks_cvv_pin() {
        assert_eq!(
            kinds("t1=%B4111111111111111^DOE/JOHN^25121010000000000000? tail"),
            vec![("%B4111111111111111^DOE/JOHN^25121010000000000000?".into(), Kind::Track1)]
        );
        assert_eq!(kinds("t2=;4111111111111111=25121010000000?,")[0].0, ";4111111111111111=25121010000000?");
        assert_eq!(kinds("4111111111111111=2512101")[0].1, Kind::Track2);
        for (s, v) in [
            ("cvv: 123", "123"),
            ("CVV=123", "123"),
            ("\"cvc\":\"1234\"", "1234"),
            ("\"cvv2\": 123", "123"),
            ("security code 123", "123"),
            ("card_cid=1234", "1234"),
        ] {
            assert_eq!(kinds(s), vec![(v.to_owned(), Kind::Cvv)], "{s}");
        }
        assert!(kinds("acid: 123").is_empty());
        assert!(kinds("cvv: 12345").is_empty());
        assert_eq!(kinds("pin_block=AB12CD34EF567890 x"), vec![("AB12CD34EF567890".into(), Kind::Pin)]);
        assert_eq!(kinds("PIN: 1234"), vec![("1234".into(), Kind::Pin)]);
        // a PIN block that also passes as a card is hidden whole, not shown with its last four
        assert_eq!(kinds("pin_block=4111111111111111"), vec![("4111111111111111".into(), Kind::Pin)]);
        assert!(kinds("spin: 1234").is_empty());
    }
}
