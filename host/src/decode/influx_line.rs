//! InfluxDB line protocol → [`Batch`].
//!
//! The whole grammar: `measurement[,tag=value...] field=value[,field=value...] [timestamp]`
//! with backslash escapes (`,` and space in measurements; `,`, `=` and space in tag
//! keys, tag values and field keys; `\\` for a backslash before those), quoted
//! string fields with `\"` and `\\` (which may span lines), `i` and `u` integer
//! suffixes, booleans in every spelling Influx accepts, floats in decimal or
//! exponent form, an optional timestamp scaled by the configured precision, blank
//! lines, `#` comments and `\r\n` endings. Points without a timestamp get the one
//! the caller supplies (the Kafka message's, or the time of reading).
//!
//! Strings go straight into the batch's arena; a token with no backslash is copied
//! once, with no intermediate allocation.

use super::{DecodeError, Precision, TIMESTAMP_OUT_OF_RANGE};
use crate::encode::line_protocol::{KEY_SPECIALS, MEASUREMENT_SPECIALS};
use boulder_batch::{string_bits, Batch, FieldKind, Span};

/// How [`Parser::token`] treats a byte: most are text; a stop ends the token;
/// a backslash, line feed or carriage return needs a look at what follows. One
/// table look-up per byte instead of a search of the stops.
const TEXT: u8 = 0;
const STOP: u8 = 1;
const LOOK: u8 = 2;

const fn stop_table(stops: &[u8]) -> [u8; 256] {
    let mut table = [TEXT; 256];
    table[b'\\' as usize] = LOOK;
    table[b'\n' as usize] = LOOK;
    table[b'\r' as usize] = LOOK;
    let mut i = 0;
    while i < stops.len() {
        table[stops[i] as usize] = STOP;
        i += 1;
    }
    table
}
const MEASUREMENT_END: [u8; 256] = stop_table(MEASUREMENT_SPECIALS);
const KEY_END: [u8; 256] = stop_table(KEY_SPECIALS);
/// A tag value ends where a measurement does (`=` is text in it).
const TAG_VALUE_END: [u8; 256] = MEASUREMENT_END;
const TIMESTAMP_END: [u8; 256] = stop_table(b" \t\r");

/// Decodes every line of `input` into `batch`, as points of `source`. Returns the
/// lines that could not be decoded; the others are in the batch.
pub fn decode(
    input: &[u8],
    precision: Precision,
    default_timestamp_ns: i64,
    source: u32,
    batch: &mut Batch,
) -> Vec<DecodeError> {
    if let Some(empty) = DecodeError::empty_message(input) {
        return vec![empty];
    }
    let mut errors = Vec::new();
    let mut parser = Parser {
        input,
        // Checked once for the whole message; only a message with invalid UTF-8
        // somewhere pays for a check per token, so that only its bad lines fail.
        text: simdutf8::basic::from_utf8(input).ok(),
        escapes: memchr::memchr(b'\\', input).is_some(),
        pos: 0,
        string_newlines: 0,
        batch,
    };
    let mut line = 1;
    while parser.pos < input.len() {
        let start = parser.pos;
        parser.skip_spaces();
        match parser.peek() {
            None => break,
            Some(b'\n') => {
                parser.pos += 1;
                line += 1;
                continue;
            }
            Some(b'\r') if parser.peek_at(1) == Some(b'\n') => {
                parser.pos += 2;
                line += 1;
                continue;
            }
            Some(b'#') => {
                parser.skip_line();
                line += 1;
                continue;
            }
            Some(_) => {}
        }
        let mark = (
            parser.batch.points.len(),
            parser.batch.tags.len(),
            parser.batch.fields.len(),
            parser.batch.arena.len(),
        );
        parser.string_newlines = 0;
        let result = parser.point(precision, default_timestamp_ns, source);
        if let Err(reason) = result {
            let b = &mut parser.batch;
            b.points.truncate(mark.0);
            b.tags.truncate(mark.1);
            b.fields.truncate(mark.2);
            b.arena.truncate(mark.3);
            parser.skip_line();
            let end = parser.pos;
            let text_end = if input[..end].ends_with(b"\n") {
                end - 1
            } else {
                end
            };
            errors.push(DecodeError {
                line,
                bytes: start..text_end,
                reason: reason.to_owned(),
            });
        }
        // A point (or a failed line) ends at its newline; only string fields can
        // hold others, and the parser counted those.
        let ended_line = parser.pos > start && input[parser.pos - 1] == b'\n';
        line += parser.string_newlines + usize::from(ended_line);
    }
    errors
}

struct Parser<'a, 'b> {
    input: &'a [u8],
    text: Option<&'a str>,
    /// Whether the message has a backslash anywhere: most have none, and then no
    /// token needs a look for escapes.
    escapes: bool,
    pos: usize,
    /// Newlines inside string fields of the current point.
    string_newlines: usize,
    batch: &'b mut Batch,
}

type Parse<T> = Result<T, &'static str>;

impl<'a> Parser<'a, '_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.input.get(self.pos + ahead).copied()
    }

    /// A token of the input as text.
    fn str(&self, raw: &'a [u8]) -> Parse<&'a str> {
        match self.text {
            Some(text) => {
                let start = raw.as_ptr() as usize - self.input.as_ptr() as usize;
                text.get(start..start + raw.len()).ok_or("not valid UTF-8")
            }
            None => std::str::from_utf8(raw).map_err(|_| "not valid UTF-8"),
        }
    }

    /// Copies a token into the arena, turning `\x` into `x` for `x` in `specials`
    /// or `\`.
    fn push_unescaped(&mut self, raw: &'a [u8], specials: &[u8]) -> Parse<Span> {
        let text = self.str(raw)?;
        if !self.escapes || !raw.contains(&b'\\') {
            return Ok(self.batch.push_str(text));
        }
        let arena = &mut self.batch.arena;
        let start = arena.len();
        // Backslashes and specials are ASCII, so cutting around them keeps whole
        // characters.
        let (mut i, mut copied) = (0, 0);
        while i < raw.len() {
            if raw[i] == b'\\' {
                if let Some(&next) = raw.get(i + 1) {
                    if next == b'\\' || specials.contains(&next) {
                        arena.push_str(&text[copied..i]);
                        copied = i + 1;
                        i += 2;
                        continue;
                    }
                }
            }
            i += 1;
        }
        arena.push_str(&text[copied..]);
        Ok(Span {
            start: start as u32,
            len: (arena.len() - start) as u32,
        })
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Moves past the next newline (or to the end).
    fn skip_line(&mut self) {
        match self.input[self.pos..].iter().position(|&b| b == b'\n') {
            Some(i) => self.pos += i + 1,
            None => self.pos = self.input.len(),
        }
    }

    fn at_line_end(&self) -> bool {
        match self.peek() {
            None | Some(b'\n') => true,
            Some(b'\r') => matches!(self.peek_at(1), None | Some(b'\n')),
            _ => false,
        }
    }

    /// Scans a token up to an unescaped byte that `ends` marks (or a newline or the
    /// end). Returns the raw token; the cursor is left on the stop byte.
    fn token(&mut self, ends: &[u8; 256]) -> &'a [u8] {
        let start = self.pos;
        loop {
            while self.pos < self.input.len() && ends[self.input[self.pos] as usize] == TEXT {
                self.pos += 1;
            }
            let Some(b) = self.peek() else { break };
            match (ends[b as usize], b, self.peek_at(1)) {
                (STOP, ..) | (_, b'\n', _) | (_, b'\r', Some(b'\n')) => break,
                // An escape: the next byte is text, unless it ends the line.
                (_, b'\\', Some(n)) if n != b'\n' => self.pos += 2,
                // A lone backslash or carriage return is text.
                _ => self.pos += 1,
            }
        }
        &self.input[start..self.pos]
    }

    fn point(&mut self, precision: Precision, default_timestamp_ns: i64, source: u32) -> Parse<()> {
        let raw = self.token(&MEASUREMENT_END);
        if raw.is_empty() {
            return Err("missing measurement");
        }
        let measurement = self.push_unescaped(raw, MEASUREMENT_SPECIALS)?;
        self.batch
            .begin_point(measurement, default_timestamp_ns, source);

        if self.peek() == Some(b',') {
            loop {
                self.pos += 1;
                let (key, value) = self.tag()?;
                let key = self.push_unescaped(key, KEY_SPECIALS)?;
                let value = self.push_unescaped(value, KEY_SPECIALS)?;
                self.batch.push_tag(key, value);
                if self.peek() != Some(b',') {
                    break;
                }
            }
        }
        if self.peek() != Some(b' ') && self.peek() != Some(b'\t') {
            return Err("missing fields");
        }
        self.skip_spaces();

        loop {
            let key_raw = self.field_key()?;
            let key = self.push_unescaped(key_raw, KEY_SPECIALS)?;
            let (kind, bits) = self.field_value()?;
            self.batch.push_field(key, kind, bits);
            match self.peek() {
                Some(b',') => self.pos += 1,
                _ => break,
            }
        }

        self.skip_spaces();
        if !self.at_line_end() {
            let raw = self.token(&TIMESTAMP_END);
            let value = self
                .str(raw)
                .ok()
                .filter(|s| !s.starts_with('+'))
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or("invalid timestamp")?;
            let ns = precision.to_nanos(value).ok_or(TIMESTAMP_OUT_OF_RANGE)?;
            self.batch
                .points
                .last_mut()
                .expect("begun above")
                .timestamp_ns = ns;
            self.skip_spaces();
            if !self.at_line_end() {
                return Err("unexpected text after the timestamp");
            }
        }
        if self.peek() == Some(b'\r') {
            self.pos += 1;
        }
        if self.peek() == Some(b'\n') {
            self.pos += 1;
        }
        Ok(())
    }

    /// A tag's `key=value`; the cursor ends on the byte after the value.
    fn tag(&mut self) -> Parse<(&'a [u8], &'a [u8])> {
        let key = self.token(&KEY_END);
        if self.peek() != Some(b'=') {
            return Err("tag without '='");
        }
        if key.is_empty() {
            return Err("empty tag key");
        }
        self.pos += 1;
        let value = self.token(&TAG_VALUE_END);
        if value.is_empty() {
            return Err("empty tag value");
        }
        Ok((key, value))
    }

    fn field_key(&mut self) -> Parse<&'a [u8]> {
        let key = self.token(&KEY_END);
        if self.peek() != Some(b'=') {
            return Err("field without '='");
        }
        if key.is_empty() {
            return Err("empty field key");
        }
        self.pos += 1;
        Ok(key)
    }

    fn field_value(&mut self) -> Parse<(FieldKind, u64)> {
        if self.peek() == Some(b'"') {
            return self.string_value();
        }
        let start = self.pos;
        while let Some(b) = self.peek() {
            if matches!(b, b',' | b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.pos += 1;
        }
        // Only ASCII is valid here, so a token that is not text is no value either.
        let text = self.str(&self.input[start..self.pos]);
        parse_scalar(text.map_err(|_| "invalid field value")?)
    }

    fn string_value(&mut self) -> Parse<(FieldKind, u64)> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err("unterminated string field"),
                Some(b'\\') if matches!(self.peek_at(1), Some(b'"' | b'\\')) => {
                    escaped = true;
                    self.pos += 2;
                }
                Some(b'"') => break,
                Some(b'\n') => {
                    self.string_newlines += 1;
                    self.pos += 1;
                }
                Some(_) => self.pos += 1,
            }
        }
        let raw = &self.input[start..self.pos];
        self.pos += 1;
        let span = if escaped {
            self.push_unescaped(raw, b"\"")?
        } else {
            let text = self.str(raw)?;
            self.batch.push_str(text)
        };
        Ok((FieldKind::String, string_bits(span)))
    }
}

fn parse_scalar(text: &str) -> Parse<(FieldKind, u64)> {
    match text.as_bytes() {
        b"t" | b"T" | b"true" | b"True" | b"TRUE" => return Ok((FieldKind::Bool, 1)),
        b"f" | b"F" | b"false" | b"False" | b"FALSE" => return Ok((FieldKind::Bool, 0)),
        [] => return Err("missing field value"),
        // InfluxDB writes no plus sign before a number and refuses one, though
        // Rust's parsers would take it.
        [b'+', ..] => return Err("invalid field value"),
        _ => {}
    }
    if let Some(int) = text.strip_suffix('i') {
        let v: i64 = int.parse().map_err(|_| "invalid integer field")?;
        return Ok((FieldKind::Int, v as u64));
    }
    if let Some(uint) = text.strip_suffix('u') {
        let v: u64 = uint.parse().map_err(|_| "invalid unsigned integer field")?;
        return Ok((FieldKind::UInt, v));
    }
    // Rust also parses "inf" and "NaN", which line protocol does not have.
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return Err("invalid field value");
    }
    let v: f64 = text.parse().map_err(|_| "invalid float field")?;
    Ok((FieldKind::Float, v.to_bits()))
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;
