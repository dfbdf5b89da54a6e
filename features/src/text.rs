//! Text into hashed, sparse term counts: the `text` feature kind (and the
//! hash of the `hashed` kind).
//!
//! [`TextHasher::hash`] walks the text once, without allocating a token:
//! each token's bytes (lower-cased) go straight into a 64-bit FNV-1a hash,
//! word n-grams combine the hashes of neighbouring tokens, and the hashing
//! trick puts each term into one of 2^bits columns with a sign taken from
//! another bit of its hash, so collisions cancel out on average instead of
//! adding up. The output is the row's non-zero columns, each once in the
//! order it first appears (the text's order: words and word n-grams, then
//! character pieces), with their (signed) term frequency, or 1 + ln(tf)
//! with `sublinear`.
//!
//! Tokens: runs of letters and digits (Unicode: `char::is_alphanumeric`),
//! with inner apostrophes kept (`don't`); each emoji a token of its own
//! (skin tones, variation selectors and joiners dropped); `@mentions` and
//! `#hashtags` keep their sign; URLs and HTML entities as the options say.

use std::borrow::Cow;

mod merge;

use merge::{TermTable, GRAM};

/// What to do with a kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRule {
    /// A token of its own, as written.
    Keep,
    /// Left out.
    Drop,
    /// One token standing for all of its kind (`@user`, `<url>`).
    Replace,
}

/// The text options of a feature.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextOptions {
    /// Columns: 2^bits (1..=24).
    pub bits: u32,
    /// Word n-grams 1..=ngrams (1..=4).
    pub ngrams: usize,
    /// `@mentions`.
    pub mentions: TokenRule,
    /// `http://`, `https://` and `www.` links.
    pub urls: TokenRule,
    /// Decode HTML entities (`&amp;`, `&lt;`, `&#39;`, ...) first.
    pub html_entities: bool,
    /// 1 + ln(tf) instead of tf.
    pub sublinear: bool,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            bits: 20,
            ngrams: 2,
            mentions: TokenRule::Keep,
            urls: TokenRule::Replace,
            html_entities: true,
            sublinear: false,
        }
    }
}

/// A text option out of range: its key and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionError {
    /// The option's key in a feature's table (`bits`, `chars`, ...).
    pub key: &'static str,
    /// What it should be, and what it is (`should be 1..=24 ...`), the key
    /// left to whoever shows it: alone, or as `features[0].bits`.
    pub message: String,
}

impl std::fmt::Display for OptionError {
    /// `` `bits` should be 1..=24 (2^bits columns), not 25 ``.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` {}", self.key, self.message)
    }
}

fn option_error(key: &'static str, message: String) -> OptionError {
    OptionError { key, message }
}

impl TextOptions {
    /// Checks the ranges, naming the option at fault.
    pub fn validate(&self) -> Result<(), OptionError> {
        if !(1..=24).contains(&self.bits) {
            return Err(option_error(
                "bits",
                format!("should be 1..=24 (2^bits columns), not {}", self.bits),
            ));
        }
        if !(1..=4).contains(&self.ngrams) {
            return Err(option_error(
                "ngrams",
                format!("should be 1..=4, not {}", self.ngrams),
            ));
        }
        Ok(())
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over bytes, continuing from `h`.
#[inline]
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// A final mix (splitmix64's), so that low bits depend on every input bit.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// True for the code points an emoji is made of (pictographs, symbols,
/// dingbats, flags' regional indicators).
fn is_emoji(c: char) -> bool {
    matches!(c as u32, 0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0x2190..=0x21FF | 0x2300..=0x23FF)
        && !is_emoji_modifier(c)
}

/// Skin tones, variation selectors and the zero-width joiner: parts of an
/// emoji that are not tokens.
fn is_emoji_modifier(c: char) -> bool {
    matches!(c as u32, 0x1F3FB..=0x1F3FF | 0xFE00..=0xFE0F | 0x200D)
}

/// True if `b` starts with `http://`, `https://` or `www.`.
#[inline]
fn is_link(b: &[u8]) -> bool {
    b.starts_with(b"http://") || b.starts_with(b"https://") || b.starts_with(b"www.")
}

/// True if the character at byte `i` of `s` continues a word: a letter,
/// a digit or `_` (what makes `@` and `#` a mention's or hashtag's sign).
#[inline]
fn starts_word_char(s: &str, i: usize) -> bool {
    match s.as_bytes().get(i) {
        Some(&b) if b < 0x80 => WORD_BYTES[b as usize] != 0,
        Some(_) => s[i..].chars().next().is_some_and(char::is_alphanumeric),
        None => false,
    }
}

/// True if the character at byte `i` of `s` is a letter or digit.
#[inline]
fn alnum_at(s: &str, i: usize) -> bool {
    match s.as_bytes().get(i) {
        Some(&b) if b < 0x80 => b.is_ascii_alphanumeric(),
        Some(_) => s[i..].chars().next().is_some_and(char::is_alphanumeric),
        None => false,
    }
}

/// Each ASCII byte that continues a word (a letter, a digit or `_`)
/// lower-cased, the others 0: one load a byte in [`word_end`] instead of
/// its character class's comparisons and a lower-casing.
const WORD_BYTES: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' {
            t[b] = c.to_ascii_lowercase();
        }
        b += 1;
    }
    t
};

/// The end of the word whose rest starts at byte `i` of `s` (letters,
/// digits, `_`, and apostrophes between letters), and whether the rest is
/// all ASCII; `h` goes on hashing the rest's lower-cased ASCII bytes (what
/// the word's hash is when it is all ASCII).
#[inline]
fn word_end(s: &str, mut i: usize, h: &mut u64) -> (usize, bool) {
    let b = s.as_bytes();
    let mut ascii = true;
    while i < b.len() {
        let d = b[i];
        if d < 0x80 {
            let lower = match WORD_BYTES[d as usize] {
                0 if d == b'\'' && alnum_at(s, i + 1) => d,
                0 => break,
                l => l,
            };
            *h ^= lower as u64;
            *h = h.wrapping_mul(FNV_PRIME);
            i += 1;
            continue;
        }
        let Some(c) = s[i..].chars().next() else {
            break;
        };
        let len = c.len_utf8();
        if c.is_alphanumeric() || (c == '\u{2019}' && alnum_at(s, i + len)) {
            ascii = false;
            i += len;
            continue;
        }
        break;
    }
    (i, ascii)
}

/// `text` with HTML entities decoded (borrowed when there are none).
pub fn decode_entities(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let decoded = tail.find(';').filter(|&end| end <= 10).and_then(|end| {
            let name = &tail[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse::<u32>().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Text to hashed term counts; keeps its buffers between calls.
#[derive(Debug, Clone)]
pub struct TextHasher {
    options: TextOptions,
    mask: u64,
    /// This text's token hashes, in order.
    tokens: Vec<u64>,
    /// This text's terms, packed (see [`TextHasher::append`]), before
    /// merging.
    terms: Vec<u64>,
    /// Merges `terms` into columns.
    table: TermTable,
    /// One token's lower-cased bytes.
    lower: String,
    /// Character n-grams of each token, when set.
    grams: Option<Grams>,
}

/// Character n-grams of each token (`<word>`, the token with a mark at
/// either end, so that prefixes and suffixes are grams of their own):
/// words that share a stem, a misspelling or an inflection share columns,
/// which a model of whole words learns only word by word.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CharGrams {
    /// The shortest gram, in bytes (characters, for ASCII).
    pub min: usize,
    /// The longest gram.
    pub max: usize,
    /// Each gram column's value is its (sublinear) count times this, so
    /// that a word's many grams do not drown the word itself.
    pub weight: f64,
}

impl CharGrams {
    /// Checks the ranges, naming the option at fault.
    pub fn validate(&self) -> Result<(), OptionError> {
        if !(1..=8).contains(&self.min) || !(self.min..=8).contains(&self.max) {
            return Err(option_error(
                "chars",
                format!(
                    "should be [min, max] with 1 <= min <= max <= 8, not [{}, {}]",
                    self.min, self.max
                ),
            ));
        }
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Err(option_error(
                "char_weight",
                format!("should be a finite number > 0, not {}", self.weight),
            ));
        }
        Ok(())
    }
}

/// Character n-grams at work: their options, and this text's tokens'
/// lower-cased bytes, kept while it is tokenised.
#[derive(Debug, Clone)]
struct Grams {
    options: CharGrams,
    /// Every token's lower-cased bytes with a mark at either end
    /// (`<token>`), one after another, and where each ends; 8 zero bytes
    /// follow the last while grams are hashed, so that any gram can be read
    /// as one 8-byte word.
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Grams {
    fn keep(&mut self, lower: impl IntoIterator<Item = u8>) {
        self.bytes.push(b'<');
        self.bytes.extend(lower);
        self.bytes.push(b'>');
        self.ends.push(self.bytes.len());
    }

    /// The kept tokens' grams, packed as [`TextHasher::append`]'s terms
    /// (marked as grams), onto `terms`.
    ///
    /// A gram of n <= 8 bytes is read as one little-endian word, its bytes
    /// beyond n masked off, and mixed once with a salt of its length: one
    /// load and one mix a gram, however long.
    fn terms(&mut self, mask: u64, terms: &mut Vec<u64>) {
        let tokens_end = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 8]);
        let b = &self.bytes[..];
        let (min, max) = (self.options.min, self.options.max);
        let mut start = 0;
        for &end in &self.ends {
            let len = end - start;
            for n in min..=max.min(len) {
                let keep = gram_mask(n);
                let salt = CHAR_SALT.rotate_left(8 * n as u32);
                // the token's grams of n bytes start at 0..len - n + 1 of
                // `words`, each with 8 bytes to read; a plain loop, since
                // an iterator's `extend` here was a call per token whose
                // set-up cost more than the token's grams
                let words = &b[start..end - n + 8];
                terms.reserve(len - n + 1);
                for i in 0..len - n + 1 {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(&words[i..i + 8]);
                    let m = mix((u64::from_le_bytes(word) & keep) ^ salt);
                    terms.push((m & mask) << 2 | GRAM | m >> 63);
                }
            }
            start = end;
        }
        self.bytes.truncate(tokens_end);
    }
}

/// The low `n` bytes (1..=8) of a word.
#[inline]
fn gram_mask(n: usize) -> u64 {
    u64::MAX >> (64 - 8 * n)
}

impl TextHasher {
    /// A hasher with `options` (checked).
    pub fn new(options: TextOptions) -> Result<TextHasher, OptionError> {
        options.validate()?;
        Ok(TextHasher {
            mask: (1u64 << options.bits) - 1,
            options,
            tokens: Vec::new(),
            terms: Vec::new(),
            table: TermTable::default(),
            lower: String::new(),
            grams: None,
        })
    }

    /// This hasher with character n-grams of each token beside the words
    /// (checked).
    pub fn with_chars(mut self, chars: CharGrams) -> Result<TextHasher, OptionError> {
        chars.validate()?;
        self.grams = Some(Grams {
            options: chars,
            bytes: Vec::new(),
            ends: Vec::new(),
        });
        Ok(self)
    }

    /// Keeps a token's lower-cased bytes for its character n-grams.
    #[inline]
    fn keep_bytes(&mut self, lower: impl IntoIterator<Item = u8>) {
        if let Some(g) = &mut self.grams {
            g.keep(lower);
        }
    }

    /// Columns: 2^bits.
    pub fn width(&self) -> usize {
        1 << self.options.bits
    }

    /// The options.
    pub fn options(&self) -> &TextOptions {
        &self.options
    }

    fn push_token(&mut self, token: &str) {
        let h = if token.is_ascii() {
            self.keep_bytes(token.bytes().map(|b| b.to_ascii_lowercase()));
            // most tokens: lower-case byte by byte, nothing copied
            let mut h = FNV_OFFSET;
            for b in token.bytes() {
                h ^= b.to_ascii_lowercase() as u64;
                h = h.wrapping_mul(FNV_PRIME);
            }
            h
        } else {
            self.lower.clear();
            for c in token.chars() {
                self.lower.extend(c.to_lowercase());
            }
            if let Some(g) = &mut self.grams {
                g.keep(self.lower.bytes());
            }
            fnv(FNV_OFFSET, self.lower.as_bytes())
        };
        self.tokens.push(h);
    }

    /// The token hashes of `text`, in order.
    ///
    /// One pass over the bytes: ASCII (most of most texts) is classified
    /// and lower-cased byte by byte and hashed as the word is scanned;
    /// other characters are decoded one at a time.
    pub fn tokens(&mut self, text: &str) -> &[u64] {
        self.tokens.clear();
        if let Some(g) = &mut self.grams {
            g.bytes.clear();
            g.ends.clear();
        }
        let text = if self.options.html_entities {
            decode_entities(text)
        } else {
            Cow::Borrowed(text)
        };
        let s: &str = &text;
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c0 = b[i];
            if c0 < 0x80 {
                if (c0 == b'h' || c0 == b'w') && is_link(&b[i..]) {
                    let rest = &s[i..];
                    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                    match self.options.urls {
                        TokenRule::Keep => self.push_token(&rest[..end]),
                        TokenRule::Replace => {
                            self.keep_bytes(*b"<url>");
                            self.tokens.push(fnv(FNV_OFFSET, b"<url>"))
                        }
                        TokenRule::Drop => {}
                    }
                    i += end;
                    continue;
                }
                let sigil = (c0 == b'@' || c0 == b'#') && starts_word_char(s, i + 1);
                if !(c0.is_ascii_alphanumeric() || sigil) {
                    i += 1;
                    continue;
                }
                let mut h = (FNV_OFFSET ^ c0.to_ascii_lowercase() as u64).wrapping_mul(FNV_PRIME);
                let (end, ascii) = word_end(s, i + 1, &mut h);
                let word = if ascii { Some(h) } else { None };
                if c0 == b'@' {
                    match self.options.mentions {
                        TokenRule::Keep => self.push_word(&s[i..end], word),
                        TokenRule::Replace => {
                            self.keep_bytes(*b"@user");
                            self.tokens.push(fnv(FNV_OFFSET, b"@user"))
                        }
                        TokenRule::Drop => {}
                    }
                } else {
                    self.push_word(&s[i..end], word);
                }
                i = end;
            } else {
                let Some(c) = s[i..].chars().next() else {
                    break;
                };
                let len = c.len_utf8();
                if is_emoji(c) {
                    let mut buf = [0u8; 4];
                    let bytes = c.encode_utf8(&mut buf).as_bytes();
                    self.keep_bytes(bytes.iter().copied());
                    self.tokens.push(fnv(FNV_OFFSET, bytes));
                    i += len;
                } else if c.is_alphanumeric() {
                    let (end, _) = word_end(s, i + len, &mut 0);
                    self.push_word(&s[i..end], None);
                    i = end;
                } else {
                    i += len;
                }
            }
        }
        &self.tokens
    }

    /// Pushes a word's hash: `ascii_hash` when the word is all ASCII (its
    /// lower-cased bytes hashed while it was scanned), else worked out here.
    #[inline]
    fn push_word(&mut self, word: &str, ascii_hash: Option<u64>) {
        match ascii_hash {
            Some(h) => {
                self.keep_bytes(word.bytes().map(|b| b.to_ascii_lowercase()));
                self.tokens.push(h)
            }
            None => self.push_token(word),
        }
    }

    /// The non-zero columns of `text`: (column, value), each column once,
    /// in the order it first appears. Values are signed term frequencies
    /// (1 + ln(tf) with `sublinear`, keeping the sign of the summed
    /// counts).
    pub fn hash(&mut self, text: &str, out: &mut Vec<(u32, f64)>) {
        out.clear();
        self.append(text, 0, out);
    }

    /// [`TextHasher::hash`], appended to `out` with `base` or-ed into each
    /// column (a feature's own range of columns, above bit `bits`).
    pub fn append(&mut self, text: &str, base: u32, out: &mut Vec<(u32, f64)>) {
        self.tokens(text);
        self.terms.clear();
        let n = self.tokens.len();
        self.terms.reserve(n * self.options.ngrams);
        for i in 0..n {
            let mut h = FNV_OFFSET;
            for k in 0..self.options.ngrams.min(n - i) {
                // an n-gram's hash: its tokens' hashes in order (a rotate
                // and a multiply each), and its length
                h = (h.rotate_left(23) ^ self.tokens[i + k]).wrapping_mul(FNV_PRIME);
                let m = mix(h ^ (k as u64 + 1));
                // (column, word, sign) packed in one word
                self.terms.push((m & self.mask) << 2 | m >> 63);
            }
        }
        let gram_weight = match &mut self.grams {
            Some(g) => {
                g.terms(self.mask, &mut self.terms);
                g.options.weight
            }
            None => 1.0,
        };
        self.table
            .merge(&self.terms, base, self.options.sublinear, gram_weight, out);
    }
}

/// The salt of character n-grams (rotated by their length), so that the
/// gram `<a>` and the word `<a>` hash apart, and grams of different
/// lengths too.
const CHAR_SALT: u64 = FNV_OFFSET ^ 0x6368_6172; // "char"

/// The column of a hashed category value: a signed one-hot in 2^`bits`
/// columns (the sign from another bit of the hash, as for text terms).
pub fn hash_value(value: &[u8], bits: u32) -> (u32, f64) {
    let m = mix(fnv(FNV_OFFSET, value));
    let column = (m & ((1u64 << bits) - 1)) as u32;
    (column, if m >> 63 == 0 { 1.0 } else { -1.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(f: impl FnOnce(&mut TextOptions)) -> TextHasher {
        let mut o = TextOptions::default();
        f(&mut o);
        TextHasher::new(o).expect("valid")
    }

    fn token_count(h: &mut TextHasher, text: &str) -> usize {
        h.tokens(text).len()
    }

    #[test]
    fn the_word_byte_table_is_the_character_class_lower_cased() {
        for b in 0u8..128 {
            let want = if b.is_ascii_alphanumeric() || b == b'_' {
                b.to_ascii_lowercase()
            } else {
                0
            };
            assert_eq!(WORD_BYTES[b as usize], want, "byte {b}");
        }
        // the apostrophe is not in the table: it joins letters only
        let mut h = hasher(|_| {});
        let quoted = h.tokens("Don't 'QUOTE' it_s").to_vec();
        assert_eq!(quoted, h.tokens("don't quote it_s"));
        assert_eq!(quoted.len(), 3);
    }

    #[test]
    fn words_numbers_emoji_and_sigils_are_tokens_case_folded() {
        let mut h = hasher(|_| {});
        let a = h
            .tokens("@United Flight 1234 was LATE 😡😡 #fail don't")
            .to_vec();
        // @united, flight, 1234, was, late, 😡, 😡, #fail, don't
        assert_eq!(a.len(), 9, "{a:?}");
        let b = h
            .tokens("@united flight 1234 was late 😡 😡 #FAIL DON'T")
            .to_vec();
        assert_eq!(a, b, "case and spacing do not matter");
        assert_eq!(a[5], a[6], "the same emoji twice");
        assert_eq!(
            token_count(&mut h, "👍🏽 ok"),
            2,
            "a skin tone is not a token"
        );
        assert_eq!(token_count(&mut h, "... !!! ,,,"), 0);
        assert_eq!(
            token_count(&mut h, "Ça coûte 5€ à l'aéroport"),
            5,
            "ça coûte 5 à l'aéroport"
        );
    }

    #[test]
    fn urls_and_mentions_follow_their_rules() {
        let mut keep = hasher(|o| {
            o.urls = TokenRule::Keep;
        });
        let mut replace = hasher(|_| {});
        let mut drop = hasher(|o| {
            o.urls = TokenRule::Drop;
            o.mentions = TokenRule::Drop;
        });
        let text = "see http://t.co/abc and https://t.co/xyz @jetblue";
        let k = keep.tokens(text).to_vec();
        let r = replace.tokens(text).to_vec();
        assert_eq!(k.len(), 5);
        assert_ne!(k[1], k[3], "kept links differ");
        assert_eq!(r[1], r[3], "replaced links are one token");
        assert_eq!(drop.tokens(text).len(), 2, "see, and");
        let mut users = hasher(|o| o.mentions = TokenRule::Replace);
        let a = users.tokens("@united").to_vec();
        let b = users.tokens("@delta").to_vec();
        assert_eq!(a, b);
    }

    #[test]
    fn html_entities_are_decoded_first() {
        assert_eq!(
            decode_entities("a &amp; b &lt;3 &#39;x&#x27; &bogus; &"),
            "a & b <3 'x' &bogus; &"
        );
        let mut h = hasher(|_| {});
        let a = h.tokens("rock &amp; roll").to_vec();
        let b = h.tokens("rock & roll").to_vec();
        assert_eq!(a, b);
        let mut raw = hasher(|o| o.html_entities = false);
        assert_eq!(raw.tokens("rock &amp; roll").len(), 3, "rock amp roll");
    }

    #[test]
    fn columns_are_unique_within_range_and_stable() {
        let mut h = hasher(|o| o.bits = 10);
        let mut out = Vec::new();
        h.hash("the cat sat on the mat the end", &mut out);
        assert!(once_each(&out), "{out:?}");
        assert!(out.iter().all(|&(c, v)| c < 1024 && v != 0.0));
        // 8 unigrams + 7 bigrams, "the" three times
        let total: f64 = out.iter().map(|(_, v)| v.abs()).sum();
        assert!((11.0..=15.0).contains(&total), "{out:?}");
        let mut again = Vec::new();
        h.hash("the cat sat on the mat the end", &mut again);
        assert_eq!(out, again);
        let mut other = hasher(|o| o.bits = 10);
        let mut third = Vec::new();
        other.hash("the cat sat on the mat the end", &mut third);
        assert_eq!(
            out, third,
            "the same columns in another hasher (another process)"
        );
    }

    #[test]
    fn repeated_terms_count_and_sublinear_damps_them() {
        let mut tf = hasher(|o| o.ngrams = 1);
        let mut out = Vec::new();
        tf.hash("bad bad bad", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.abs(), 3.0);
        let mut sub = hasher(|o| {
            o.ngrams = 1;
            o.sublinear = true;
        });
        sub.hash("bad bad bad", &mut out);
        assert!((out[0].1.abs() - (1.0 + 3f64.ln())).abs() < 1e-12);
    }

    fn with_chars(min: usize, max: usize, weight: f64) -> TextHasher {
        hasher(|o| {
            o.ngrams = 1;
            o.bits = 24;
            o.sublinear = true;
        })
        .with_chars(CharGrams { min, max, weight })
        .expect("valid")
    }

    /// True if no column is in `out` twice.
    fn once_each(out: &[(u32, f64)]) -> bool {
        let mut c: Vec<u32> = out.iter().map(|x| x.0).collect();
        c.sort_unstable();
        c.dedup();
        c.len() == out.len()
    }

    fn columns(h: &mut TextHasher, text: &str) -> Vec<(u32, f64)> {
        let mut out = Vec::new();
        h.hash(text, &mut out);
        out
    }

    #[test]
    fn character_grams_are_columns_beside_the_word_at_their_weight() {
        let mut h = with_chars(3, 3, 0.25);
        // `ab` -> the word, and the grams `<ab` and `ab>` of `<ab>`
        let out = columns(&mut h, "AB");
        assert_eq!(out.len(), 3, "{out:?}");
        let mut values: Vec<f64> = out.iter().map(|(_, v)| v.abs()).collect();
        values.sort_by(f64::total_cmp);
        assert_eq!(values, vec![0.25, 0.25, 1.0]);
        assert!(once_each(&out), "{out:?}");
        // the word's column is the one words-only hashing gives
        let mut words = hasher(|o| {
            o.ngrams = 1;
            o.bits = 24;
            o.sublinear = true;
        });
        let word = columns(&mut words, "ab")[0];
        assert!(out.contains(&word), "{out:?} {word:?}");
    }

    #[test]
    fn words_sharing_a_stem_share_gram_columns() {
        let mut h = with_chars(4, 4, 0.3);
        let a = columns(&mut h, "delayed");
        let b = columns(&mut h, "delays");
        let shared = a.iter().filter(|c| b.contains(c)).count();
        // `<del`, `dela`, `elay`: the words themselves differ
        assert_eq!(shared, 3, "{a:?} {b:?}");
        let c = columns(&mut h, "thanks");
        assert!(!a.iter().any(|x| c.contains(x)), "nothing in common");
    }

    #[test]
    fn a_gram_is_its_own_bytes_whatever_follows_it() {
        // every length 2..=8, read as one masked word: the next token's
        // bytes (or the padding) must not leak into a gram (1-grams would
        // share `<` and `>` with the next token)
        let mut h = with_chars(2, 8, 0.5);
        let alone = columns(&mut h, "abcdefghij");
        let followed = columns(&mut h, "abcdefghij zzzzzzzzzz");
        assert!(alone.iter().all(|c| followed.contains(c)), "{alone:?}");
        // `<abcdefghij>` is 12 bytes: 11 + 10 + ... + 5 grams, all apart,
        // and the word
        assert_eq!(alone.len(), (5..=11).sum::<usize>() + 1, "{alone:?}");
        let mut short = with_chars(8, 8, 0.5);
        assert_eq!(
            columns(&mut short, "abcde").len(),
            1,
            "`<abcde>` is 7 bytes: the word only"
        );
        assert_eq!(
            columns(&mut short, "abcdef").len(),
            2,
            "`<abcdef>`, and the word"
        );
    }

    #[test]
    fn repeated_grams_count_once_a_column_damped() {
        let mut h = with_chars(2, 2, 0.5);
        // `<aaaa>`: `<a`, `aa` three times, `a>`; and the word
        let out = columns(&mut h, "aaaa");
        assert_eq!(out.len(), 4, "{out:?}");
        let damped = 0.5 * (1.0 + 3f64.ln());
        assert!(
            out.iter().any(|(_, v)| (v.abs() - damped).abs() < 1e-12),
            "{out:?}"
        );
        // mentions, links and emoji have grams too
        let more = columns(&mut with_chars(3, 3, 0.2), "@jetblue 😡 http://t.co/x");
        assert!(more.len() > 3 + 8, "{more:?}");
    }

    #[test]
    fn character_gram_options_are_checked() {
        for (min, max, weight, key) in [
            (0, 3, 0.2, "chars"),
            (4, 3, 0.2, "chars"),
            (3, 9, 0.2, "chars"),
            (3, 5, 0.0, "char_weight"),
            (3, 5, f64::NAN, "char_weight"),
        ] {
            let e = hasher(|_| {})
                .with_chars(CharGrams { min, max, weight })
                .expect_err("out of range");
            assert_eq!(e.key, key, "{e}");
            assert!(
                e.to_string().starts_with(&format!("`{key}` should be")),
                "{e}"
            );
        }
    }

    #[test]
    fn signs_split_about_evenly_and_bigrams_are_order_sensitive() {
        let mut h = hasher(|o| o.ngrams = 1);
        let mut out = Vec::new();
        let words: Vec<String> = (0..2000).map(|i| format!("w{i}")).collect();
        h.hash(&words.join(" "), &mut out);
        let negative = out.iter().filter(|(_, v)| *v < 0.0).count();
        assert!(
            (800..1200).contains(&negative),
            "{negative} of {}",
            out.len()
        );
        let mut bi = hasher(|o| o.ngrams = 2);
        let (mut ab, mut ba) = (Vec::new(), Vec::new());
        bi.hash("not good", &mut ab);
        bi.hash("good not", &mut ba);
        assert_ne!(ab, ba, "the bigram differs");
    }

    #[test]
    fn bad_options_name_the_option() {
        let e = TextHasher::new(TextOptions {
            bits: 30,
            ..TextOptions::default()
        })
        .expect_err("too many bits");
        assert!(
            e.key == "bits" && e.to_string().starts_with("`bits` should be"),
            "{e}"
        );
        let e = TextHasher::new(TextOptions {
            ngrams: 0,
            ..TextOptions::default()
        })
        .expect_err("no n-grams");
        assert!(
            e.key == "ngrams" && e.to_string().starts_with("`ngrams` should be"),
            "{e}"
        );
    }
}
