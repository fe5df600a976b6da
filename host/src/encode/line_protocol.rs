//! InfluxDB line protocol, written straight from a [`Batch`].
//!
//! Escaping follows the line protocol reference: `,` and space in measurements;
//! `,`, `=` and space in tag keys, tag values and field keys; `"` and `\` in string
//! field values. A backslash in a name is doubled only where it would otherwise
//! escape what follows it (before a special character, another backslash, or the
//! end), which VictoriaMetrics and InfluxDB both read back as one backslash.
//! Timestamps are written in nanoseconds, so writes use `precision=ns`.
//!
//! What line protocol cannot express is reported, not mangled: a point with no
//! writable field (NaN and ±Inf have no spelling), an empty measurement, or a
//! newline in a name. Empty tag keys or values are left out, as Influx requires.

use boulder_batch::{Batch, FieldValue, PointRef};
use std::fmt;

/// Why a point cannot be written as line protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unwritable {
    /// The measurement is empty.
    EmptyMeasurement,
    /// No field is left once NaN, ±Inf and empty keys are left out.
    NoFields,
    /// A measurement, tag or field key contains a newline.
    Newline,
    /// The measurement starts with `#` or a tab: a reader (Boulder's, InfluxDB's)
    /// takes the line for a comment, or the tab for space before it.
    MeasurementStart,
    /// Every writable field's key starts with a tab, which a reader takes for
    /// part of the space before the fields when it comes first.
    FieldKeyStart,
}

impl Unwritable {
    /// A short reason, for counters and dead-letter headers.
    pub fn reason(self) -> &'static str {
        match self {
            Unwritable::EmptyMeasurement => "empty measurement",
            Unwritable::NoFields => "no writable field (NaN and Inf cannot be written)",
            Unwritable::Newline => "newline in a measurement, tag or field key",
            Unwritable::MeasurementStart => {
                "a measurement starting with '#' or a tab (line protocol reads a comment, or drops the tab)"
            }
            Unwritable::FieldKeyStart => {
                "every field key starts with a tab (line protocol drops it from the first)"
            }
        }
    }
}

impl fmt::Display for Unwritable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// What a kind of name escapes: its specials, and per byte whether a string
/// holding it takes the slow, escaping path (a table look-up per byte instead of a
/// search of the specials).
struct Escaping {
    specials: &'static [u8],
    needs_care: [bool; 256],
}

impl Escaping {
    const fn new(specials: &'static [u8]) -> Escaping {
        let mut needs_care = [false; 256];
        needs_care[b'\\' as usize] = true;
        needs_care[b'\n' as usize] = true;
        let mut i = 0;
        while i < specials.len() {
            needs_care[specials[i] as usize] = true;
            i += 1;
        }
        Escaping {
            specials,
            needs_care,
        }
    }
}

/// What a backslash escapes in a measurement (besides a backslash before them).
pub(crate) const MEASUREMENT_SPECIALS: &[u8] = b", ";
/// ...and in tag keys, tag values and field keys. The decoder reads by the same.
pub(crate) const KEY_SPECIALS: &[u8; 3] = b",= ";

const MEASUREMENT: Escaping = Escaping::new(MEASUREMENT_SPECIALS);
const KEY: Escaping = Escaping::new(KEY_SPECIALS);

/// Appends point `index` of `batch` as one line (with its newline) to `out`. On
/// error `out` is left as it was.
pub fn write_point(batch: &Batch, index: usize, out: &mut Vec<u8>) -> Result<(), Unwritable> {
    write_point_with(batch, index, out, Strings::MayNeedEscaping)
}

/// [`write_point`], knowing what `strings` says of the batch's strings.
fn write_point_with(
    batch: &Batch,
    index: usize,
    out: &mut Vec<u8>,
    strings: Strings,
) -> Result<(), Unwritable> {
    let start = out.len();
    write_line(batch.point(index), out, strings).inspect_err(|_| out.truncate(start))
}

/// What is known of a batch's strings before writing its points.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strings {
    /// Each string is scanned for bytes to escape as it is written.
    MayNeedEscaping,
    /// The arena holds no byte that any string would escape (nor a newline), so
    /// every string is copied as it is.
    Plain,
}

impl Strings {
    /// One vectorised scan of the whole arena, instead of one scan per string: most
    /// batches have no comma, equals sign, space, backslash or newline in any name.
    fn of(batch: &Batch) -> Strings {
        let arena = batch.arena.as_bytes();
        // The measurement's specials are among the keys'.
        let &[a, b, c] = KEY_SPECIALS;
        if memchr::memchr3(a, b, c, arena).is_none()
            && memchr::memchr2(b'\\', b'\n', arena).is_none()
        {
            Strings::Plain
        } else {
            Strings::MayNeedEscaping
        }
    }
}

/// Appends `point`'s line; on error, what it appended before failing stays.
fn write_line(point: PointRef<'_>, out: &mut Vec<u8>, strings: Strings) -> Result<(), Unwritable> {
    let measurement = point.measurement();
    if measurement.is_empty() {
        return Err(Unwritable::EmptyMeasurement);
    }
    if matches!(measurement.as_bytes()[0], b'#' | b'\t') {
        return Err(Unwritable::MeasurementStart);
    }
    write_escaped(out, measurement, &MEASUREMENT, strings)?;
    for (key, value) in point.tags() {
        if key.is_empty() || value.is_empty() {
            continue;
        }
        out.push(b',');
        write_escaped(out, key, &KEY, strings)?;
        out.push(b'=');
        write_escaped(out, value, &KEY, strings)?;
    }
    let fields_start = out.len();
    let mut separator = b' ';
    for (key, value) in point.fields() {
        if !writable(key, value) {
            continue;
        }
        out.push(separator);
        separator = b',';
        write_escaped(out, key, &KEY, strings)?;
        out.push(b'=');
        write_value(out, value);
    }
    // A reader skips tabs after the space before the fields: a first key that
    // starts with one (escaping leaves tabs alone) must not come first.
    if out.get(fields_start + 1) == Some(&b'\t') {
        out.truncate(fields_start);
        return write_tab_led_last(point, out, strings);
    }
    if separator == b' ' {
        return Err(Unwritable::NoFields);
    }
    end_line(point, out);
    Ok(())
}

/// Appends the timestamp and the newline.
fn end_line(point: PointRef<'_>, out: &mut Vec<u8>) {
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(point.timestamp_ns()).as_bytes());
    out.push(b'\n');
}

/// Whether a field can be written: NaN, ±Inf and empty keys cannot.
#[inline]
fn writable(key: &str, value: FieldValue<'_>) -> bool {
    !key.is_empty() && !matches!(value, FieldValue::Float(v) if !v.is_finite())
}

/// Writes the fields (and the rest of the line) with those whose key starts with
/// a tab after the others (the order of fields means nothing to a database).
#[cold]
fn write_tab_led_last(
    point: PointRef<'_>,
    out: &mut Vec<u8>,
    strings: Strings,
) -> Result<(), Unwritable> {
    let fields = || point.fields().filter(|&(k, v)| writable(k, v));
    let tab_led = |k: &str| k.as_bytes()[0] == b'\t';
    let others = fields().filter(|(k, _)| !tab_led(k));
    let mut separator = b' ';
    for (key, value) in others.chain(fields().filter(|(k, _)| tab_led(k))) {
        if separator == b' ' && tab_led(key) {
            return Err(Unwritable::FieldKeyStart);
        }
        out.push(separator);
        separator = b',';
        write_escaped(out, key, &KEY, strings)?;
        out.push(b'=');
        write_value(out, value);
    }
    end_line(point, out);
    Ok(())
}

fn write_value(out: &mut Vec<u8>, value: FieldValue<'_>) {
    match value {
        FieldValue::Float(v) => {
            out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes())
        }
        FieldValue::Int(v) => {
            out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
            out.push(b'i');
        }
        FieldValue::UInt(v) => {
            out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
            out.push(b'u');
        }
        FieldValue::Bool(v) => out.extend_from_slice(if v { b"true" } else { b"false" }),
        FieldValue::String(s) => {
            out.push(b'"');
            for &b in s.as_bytes() {
                if b == b'"' || b == b'\\' {
                    out.push(b'\\');
                }
                out.push(b);
            }
            out.push(b'"');
        }
    }
}

fn write_escaped(
    out: &mut Vec<u8>,
    s: &str,
    escaping: &Escaping,
    strings: Strings,
) -> Result<(), Unwritable> {
    let (bytes, specials) = (s.as_bytes(), escaping.specials);
    if strings == Strings::Plain || !bytes.iter().any(|&b| escaping.needs_care[b as usize]) {
        out.extend_from_slice(bytes);
        return Ok(());
    }
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            return Err(Unwritable::Newline);
        }
        if specials.contains(&b) {
            out.push(b'\\');
        } else if b == b'\\' {
            let next = bytes.get(i + 1);
            if next.is_none_or(|n| specials.contains(n) || *n == b'\\') {
                out.push(b'\\');
            }
        }
        out.push(b);
    }
    Ok(())
}

/// Point `index` as a line without its newline, for dead letters and reports. A
/// point that cannot be written is described instead.
pub fn point_to_line(batch: &Batch, index: usize) -> String {
    let mut out = Vec::new();
    match write_point(batch, index, &mut out) {
        Ok(()) => {
            out.pop();
            String::from_utf8(out).expect("line protocol of UTF-8 strings is UTF-8")
        }
        Err(e) => format!(
            "# unwritable point ({e}): measurement {:?}",
            batch.point(index).measurement()
        ),
    }
}

/// Appends every writable point of `batch` to `out`; returns the indices and
/// reasons of the others.
pub fn write_batch(batch: &Batch, out: &mut Vec<u8>) -> Vec<(usize, Unwritable)> {
    let mut unwritable = Vec::new();
    let strings = Strings::of(batch);
    for i in 0..batch.len() {
        if let Err(e) = write_point_with(batch, i, out, strings) {
            unwritable.push((i, e));
        }
    }
    unwritable
}

#[cfg(test)]
mod tests {
    use super::*;
    use boulder_batch::Format;

    fn one(m: &str, tags: &[(&str, &str)], fields: &[(&str, FieldValue<'_>)], ts: i64) -> Batch {
        let mut b = Batch::new();
        let s = b.source("t", Format::InfluxLine);
        let m = b.push_str(m);
        b.begin_point(m, ts, s);
        for (k, v) in tags {
            let (k, v) = (b.push_str(k), b.push_str(v));
            b.push_tag(k, v);
        }
        for (k, v) in fields {
            b.push_field_value(k, *v);
        }
        b
    }

    #[test]
    fn writes_every_value_type() {
        let b = one(
            "cpu",
            &[("host", "a")],
            &[
                ("f", FieldValue::Float(1.5)),
                ("whole", FieldValue::Float(2.0)),
                ("big", FieldValue::Float(-1e16)),
                ("small", FieldValue::Float(2.5e-7)),
                ("i", FieldValue::Int(-3)),
                ("u", FieldValue::UInt(u64::MAX)),
                ("b", FieldValue::Bool(true)),
                ("s", FieldValue::String("say \"hi\" \\o/")),
            ],
            1_700_000_000_123_456_789,
        );
        assert_eq!(
            point_to_line(&b, 0),
            r#"cpu,host=a f=1.5,whole=2.0,big=-1e+16,small=2.5e-7,i=-3i,u=18446744073709551615u,b=true,s="say \"hi\" \\o/" 1700000000123456789"#
        );
    }

    #[test]
    fn escapes_names() {
        let b = one(
            "my measure,x",
            &[("tag key", "a=b,c"), ("back\\", "sl\\ash")],
            &[("field=key", FieldValue::Int(1))],
            0,
        );
        assert_eq!(
            point_to_line(&b, 0),
            r"my\ measure\,x,tag\ key=a\=b\,c,back\\=sl\ash field\=key=1i 0"
        );
    }

    /// What a reader would take for something else is written so that it reads
    /// back the same (found by the round-trip fuzz target), or refused.
    #[test]
    fn writes_nothing_a_reader_would_read_otherwise() {
        let inf = FieldValue::Float(f64::INFINITY);
        let tabbed = one(
            "m",
            &[],
            &[
                ("x", inf),
                ("\tb", FieldValue::Int(1)),
                ("c", FieldValue::Int(2)),
            ],
            5,
        );
        assert_eq!(point_to_line(&tabbed, 0), "m c=2i,\tb=1i 5");
        // The decoder reads it back with its tab: decode/influx_line/tests.rs.
        let mut out = Vec::new();
        let all_tabbed = one("m", &[], &[("\tb", FieldValue::Int(1))], 5);
        assert_eq!(
            write_point(&all_tabbed, 0, &mut out),
            Err(Unwritable::FieldKeyStart)
        );
        for m in ["#m", "\tm"] {
            let b = one(m, &[], &[("f", FieldValue::Int(1))], 5);
            assert_eq!(
                write_point(&b, 0, &mut out),
                Err(Unwritable::MeasurementStart)
            );
        }
        assert!(out.is_empty());
        let inner = one("a#b\tc", &[], &[("f", FieldValue::Int(1))], 5);
        assert_eq!(point_to_line(&inner, 0), "a#b\tc f=1i 5");
    }

    #[test]
    fn skips_what_cannot_be_written() {
        let b = one(
            "m",
            &[("empty", ""), ("", "v")],
            &[
                ("nan", FieldValue::Float(f64::NAN)),
                ("ok", FieldValue::Float(1.0)),
            ],
            5,
        );
        assert_eq!(point_to_line(&b, 0), "m ok=1.0 5");
        let mut out = b"keep".to_vec();
        let nan = one("m", &[], &[("nan", FieldValue::Float(f64::INFINITY))], 5);
        assert_eq!(write_point(&nan, 0, &mut out), Err(Unwritable::NoFields));
        assert_eq!(out, b"keep");
        let newline = one("m", &[("k", "a\nb")], &[("f", FieldValue::Int(1))], 5);
        assert_eq!(
            write_batch(&newline, &mut out),
            vec![(0, Unwritable::Newline)]
        );
        let empty = one("", &[], &[("f", FieldValue::Int(1))], 5);
        assert_eq!(
            write_point(&empty, 0, &mut out),
            Err(Unwritable::EmptyMeasurement)
        );
    }

    #[test]
    fn a_batch_is_written_as_its_points_are_one_by_one() {
        // Every byte that some name escapes turns the batch's fast path off, and
        // the batch's text is always its points' text.
        let mut escaped: Vec<u8> = (0..=255u8)
            .filter(|&b| KEY.needs_care[b as usize] || MEASUREMENT.needs_care[b as usize])
            .collect();
        escaped.push(b'x');
        for byte in escaped {
            let odd = format!("v{}w", byte as char);
            for place in 0..3 {
                let mut b = one("cpu", &[("host", "a")], &[("f", FieldValue::Int(1))], 1);
                let (m, t, f) = match place {
                    0 => (odd.as_str(), "t", "f"),
                    1 => ("m", odd.as_str(), "f"),
                    _ => ("m", "t", odd.as_str()),
                };
                let m = b.push_str(m);
                b.begin_point(m, 2, 0);
                let (k, v) = (b.push_str("k"), b.push_str(t));
                b.push_tag(k, v);
                b.push_field_value(f, FieldValue::Float(0.5));

                let plain = byte == b'x';
                assert_eq!(Strings::of(&b) == Strings::Plain, plain, "{byte:#x}");
                let (mut whole, mut each) = (Vec::new(), Vec::new());
                let unwritable = write_batch(&b, &mut whole);
                for i in 0..b.len() {
                    let _ = write_point(&b, i, &mut each);
                }
                assert_eq!(whole, each, "{byte:#x} in place {place}");
                assert_eq!(unwritable.is_empty(), byte != b'\n', "{byte:#x}");
            }
        }
    }
}
