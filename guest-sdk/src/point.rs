//! The point a transform sees and edits.

use crate::run::Input;
use boulder_batch::{
    Batch, FieldRecord, FieldValue, Format, PointRecord, PointRef, Span, TagRecord,
};

/// One point, editable in place.
///
/// Reading allocates nothing: strings are borrowed from the batch. Setting a string
/// appends it to the batch once; setting a string to its current value costs a
/// comparison. Tags and fields keep their order; `set_*` replaces the first entry
/// with the same key or appends a new one.
pub struct Point<'a> {
    // The output batch; the point being edited is always its last point. Its tag and
    // field records are its own (no other point's span covers them): they shrink in
    // place, and move to the end of `batch.tags` or `batch.fields` to grow.
    batch: &'a mut Batch,
    // The input point, which `split` copies again.
    input: &'a Input<'a>,
    input_index: usize,
    // Whether a record was written: every edit goes through `record_mut`,
    // `tag_record_mut` or `field_record_mut` (or adds a point, in `split`).
    edited: bool,
}

impl<'a> Point<'a> {
    /// Starts editing a copy of `input`'s point `input_index`, appended to `batch`.
    ///
    /// With `records_in_place`, `batch` starts with copies of all of `input`'s tag
    /// and field records and no two input points share any (see `transform_batch`),
    /// so this first copy of the point uses its records where they are: a point
    /// kept as it is costs one record, not one per tag and field.
    ///
    /// # Safety
    /// `batch`'s arena must start with `input`'s strings (`input`'s own arena may
    /// have been moved there) followed only by strings appended with
    /// `Batch::push_str`; `input`'s records must be valid (as `Batch::validate`
    /// checks) against those strings, and `batch`'s records copied from `input`'s
    /// or made by `Point`: strings are read without bounds checks (see [`text`]).
    #[inline]
    pub(crate) unsafe fn copy_of(
        batch: &'a mut Batch,
        input: &'a Input<'a>,
        input_index: usize,
        records_in_place: bool,
    ) -> Point<'a> {
        if records_in_place {
            batch.points.push(input.points[input_index]);
        } else {
            push_copy(batch, input, input_index);
        }
        Point {
            batch,
            input,
            input_index,
            edited: false,
        }
    }

    /// Whether any record of the point (or of a split copy) was written since
    /// `copy_of`. Writing a value equal to the old one counts too.
    pub(crate) fn edited(&self) -> bool {
        self.edited
    }

    #[inline]
    fn index(&self) -> usize {
        self.batch.points.len() - 1
    }

    #[inline]
    fn record(&self) -> &PointRecord {
        &self.batch.points[self.index()]
    }

    #[inline]
    fn record_mut(&mut self) -> &mut PointRecord {
        self.edited = true;
        let i = self.index();
        &mut self.batch.points[i]
    }

    #[inline]
    fn view(&self) -> PointRef<'_> {
        self.batch.point(self.index())
    }

    /// Appends `s` unless `current` already holds it, and returns its span.
    #[inline]
    fn intern(&mut self, current: Span, s: &str) -> Span {
        if text(self.batch, current) == s {
            current
        } else {
            self.batch.push_str(s)
        }
    }

    // ---- measurement, timestamp, context ----

    /// The measurement (metric name).
    #[inline]
    pub fn measurement(&self) -> &str {
        text(self.batch, self.record().measurement)
    }

    /// Renames the measurement.
    #[inline]
    pub fn set_measurement(&mut self, measurement: &str) {
        let span = self.intern(self.record().measurement, measurement);
        self.record_mut().measurement = span;
    }

    /// Nanoseconds since the Unix epoch.
    pub fn timestamp_ns(&self) -> i64 {
        self.record().timestamp_ns
    }

    /// Sets the timestamp, in nanoseconds since the Unix epoch.
    pub fn set_timestamp_ns(&mut self, timestamp_ns: i64) {
        self.record_mut().timestamp_ns = timestamp_ns;
    }

    /// The Kafka topic the point was read from (or the name given to
    /// `boulder transform --topic`).
    pub fn source_topic(&self) -> &str {
        self.view().source_topic()
    }

    /// The wire format the point was decoded from.
    #[inline]
    pub fn format(&self) -> Format {
        // The host checks every batch it passes, so the format code is known.
        self.view().format().unwrap_or(Format::InfluxLine)
    }

    /// The tenant the router assigned; empty while routing.
    pub fn tenant(&self) -> &str {
        text(self.batch, self.record().tenant)
    }

    /// Assigns the point to a tenant. Only the router's answer counts; in a
    /// tenant's chain the host ignores a change.
    #[inline]
    pub fn set_tenant(&mut self, tenant: &str) {
        // A router gives most points of a batch the tenant it gave the point
        // before: share that string instead of appending it once per point.
        let index = self.index();
        let previous = index
            .checked_sub(1)
            .map(|i| self.batch.points[i].tenant)
            .filter(|&span| text(self.batch, span) == tenant);
        let span = match previous {
            Some(span) => span,
            None => self.intern(self.record().tenant, tenant),
        };
        self.record_mut().tenant = span;
    }

    // ---- tags ----

    /// The tags, as `(key, value)`, in order.
    #[inline]
    pub fn tags(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        let batch: &Batch = self.batch;
        batch
            .tags_of(self.record())
            .iter()
            .map(move |t| (text(batch, t.key), text(batch, t.value)))
    }

    /// The value of the first tag with this key.
    #[inline]
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tag_index(key).map(|i| self.tag_at(i).1)
    }

    /// Number of tags.
    #[inline]
    pub fn tag_count(&self) -> usize {
        self.record().tags.len as usize
    }

    /// The tag at `index`, as `(key, value)`.
    ///
    /// # Panics
    /// If `index >= tag_count()`.
    #[inline]
    pub fn tag_at(&self, index: usize) -> (&str, &str) {
        let t = self.tag_record(index);
        (text(self.batch, t.key), text(self.batch, t.value))
    }

    /// Sets the value of the first tag with this key, or adds the tag.
    pub fn set_tag(&mut self, key: &str, value: &str) {
        let found = self.tag_index(key);
        match found {
            Some(i) => self.set_tag_value_at(i, value),
            None => {
                let (key, value) = (self.batch.push_str(key), self.batch.push_str(value));
                self.move_tags_to_end();
                self.batch.tags.push(TagRecord { key, value });
                self.record_mut().tags.len += 1;
            }
        }
    }

    /// Renames the tag at `index`.
    #[inline]
    pub fn set_tag_key_at(&mut self, index: usize, key: &str) {
        let span = self.intern(self.tag_record(index).key, key);
        self.tag_record_mut(index).key = span;
    }

    /// Changes the value of the tag at `index`.
    pub fn set_tag_value_at(&mut self, index: usize, value: &str) {
        let span = self.intern(self.tag_record(index).value, value);
        self.tag_record_mut(index).value = span;
    }

    /// Removes the first tag with this key; returns whether there was one.
    pub fn remove_tag(&mut self, key: &str) -> bool {
        let found = self.tag_index(key);
        match found {
            Some(i) => {
                self.remove_tag_at(i);
                true
            }
            None => false,
        }
    }

    /// Removes the tag at `index`.
    pub fn remove_tag_at(&mut self, index: usize) {
        let absolute = self.tag_absolute(index);
        let end = self.record().tags.end() as usize;
        self.batch.tags.copy_within(absolute + 1..end, absolute);
        self.record_mut().tags.len -= 1;
    }

    /// Keeps only the tags for which `keep(key, value)` is true.
    pub fn retain_tags(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let mut i = 0;
        while i < self.tag_count() {
            let (k, v) = self.tag_at(i);
            if keep(k, v) {
                i += 1;
            } else {
                self.remove_tag_at(i);
            }
        }
    }

    #[inline]
    fn tag_absolute(&self, index: usize) -> usize {
        let tags = self.record().tags;
        assert!(index < tags.len as usize, "tag index {index} out of range");
        tags.start as usize + index
    }

    #[inline]
    fn tag_record(&self, index: usize) -> TagRecord {
        self.batch.tags[self.tag_absolute(index)]
    }

    #[inline]
    fn tag_record_mut(&mut self, index: usize) -> &mut TagRecord {
        self.edited = true;
        let i = self.tag_absolute(index);
        &mut self.batch.tags[i]
    }

    // ---- fields ----

    /// The fields, as `(key, value)`, in order.
    #[inline]
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&str, FieldValue<'_>)> + '_ {
        let batch: &Batch = self.batch;
        batch
            .fields_of(self.record())
            .iter()
            .map(move |f| (text(batch, f.key), batch.field_value(f)))
    }

    /// The value of the first field with this key.
    #[inline]
    pub fn field(&self, key: &str) -> Option<FieldValue<'_>> {
        self.field_index(key).map(|i| self.field_at(i).1)
    }

    /// Number of fields.
    #[inline]
    pub fn field_count(&self) -> usize {
        self.record().fields.len as usize
    }

    /// The field at `index`, as `(key, value)`.
    ///
    /// # Panics
    /// If `index >= field_count()`.
    #[inline]
    pub fn field_at(&self, index: usize) -> (&str, FieldValue<'_>) {
        let f = self.field_record(index);
        (text(self.batch, f.key), self.batch.field_value(&f))
    }

    /// Sets the value of the first field with this key, or adds the field.
    pub fn set_field(&mut self, key: &str, value: FieldValue<'_>) {
        let found = self.field_index(key);
        match found {
            Some(i) => self.set_field_value_at(i, value),
            None => {
                let key = self.batch.push_str(key);
                let (kind, bits) = self.batch.field_bits(value);
                self.move_fields_to_end();
                self.batch.fields.push(FieldRecord {
                    key,
                    kind: kind as u32,
                    bits,
                });
                self.record_mut().fields.len += 1;
            }
        }
    }

    /// Renames the field at `index`.
    #[inline]
    pub fn set_field_key_at(&mut self, index: usize, key: &str) {
        let span = self.intern(self.field_record(index).key, key);
        self.field_record_mut(index).key = span;
    }

    /// Changes the value of the field at `index`.
    pub fn set_field_value_at(&mut self, index: usize, value: FieldValue<'_>) {
        let (kind, bits) = self.batch.field_bits(value);
        let field = self.field_record_mut(index);
        field.kind = kind as u32;
        field.bits = bits;
    }

    /// Removes the first field with this key; returns whether there was one.
    pub fn remove_field(&mut self, key: &str) -> bool {
        let found = self.field_index(key);
        match found {
            Some(i) => {
                self.remove_field_at(i);
                true
            }
            None => false,
        }
    }

    /// Removes the field at `index`.
    pub fn remove_field_at(&mut self, index: usize) {
        let absolute = self.field_absolute(index);
        let end = self.record().fields.end() as usize;
        self.batch.fields.copy_within(absolute + 1..end, absolute);
        self.record_mut().fields.len -= 1;
    }

    /// Keeps only the fields for which `keep(key, value)` is true.
    pub fn retain_fields(&mut self, mut keep: impl FnMut(&str, FieldValue<'_>) -> bool) {
        let mut i = 0;
        while i < self.field_count() {
            let (k, v) = self.field_at(i);
            if keep(k, v) {
                i += 1;
            } else {
                self.remove_field_at(i);
            }
        }
    }

    #[inline]
    fn field_absolute(&self, index: usize) -> usize {
        let fields = self.record().fields;
        assert!(
            index < fields.len as usize,
            "field index {index} out of range"
        );
        fields.start as usize + index
    }

    #[inline]
    fn field_record(&self, index: usize) -> FieldRecord {
        self.batch.fields[self.field_absolute(index)]
    }

    #[inline]
    fn field_record_mut(&mut self, index: usize) -> &mut FieldRecord {
        self.edited = true;
        let i = self.field_absolute(index);
        &mut self.batch.fields[i]
    }

    // ---- lookups ----

    /// Index of the first tag with this key. Lengths are compared first: most keys
    /// differ in length from the one sought, and then neither string is read.
    #[inline]
    fn tag_index(&self, key: &str) -> Option<usize> {
        let batch: &Batch = self.batch;
        let tags = batch.tags_of(self.record());
        tags.iter()
            .position(|t| t.key.len as usize == key.len() && text(batch, t.key) == key)
    }

    /// [`Point::tag_index`] for fields.
    #[inline]
    fn field_index(&self, key: &str) -> Option<usize> {
        let batch: &Batch = self.batch;
        let fields = batch.fields_of(self.record());
        fields
            .iter()
            .position(|f| f.key.len as usize == key.len() && text(batch, f.key) == key)
    }

    // ---- splitting ----

    /// Keeps the point as it is now and starts another copy of the *input* point:
    /// later edits change the new copy only. Call it once per extra point wanted; the
    /// verdict returned by `process` applies to all of them.
    ///
    /// ```
    /// # use boulder_guest_sdk::{Point, Verdict};
    /// // One point per field: `m a=1,b=2` becomes `m a=1` and `m b=2`.
    /// fn one_field_each(point: &mut Point<'_>) -> Verdict {
    ///     for i in 0..point.field_count() {
    ///         if i > 0 {
    ///             point.split();
    ///         }
    ///         let mut index = 0;
    ///         point.retain_fields(|_, _| { index += 1; index - 1 == i });
    ///     }
    ///     Verdict::Keep
    /// }
    /// # let _ = one_field_each;
    /// ```
    pub fn split(&mut self) {
        self.edited = true;
        push_copy(self.batch, self.input, self.input_index);
    }

    // ---- growing ----

    /// Makes this point's tags the last records of `batch.tags`, so that one more
    /// can be pushed. The records left behind are referred to by nothing.
    fn move_tags_to_end(&mut self) {
        let index = self.index();
        let Batch { points, tags, .. } = &mut *self.batch;
        move_to_end(tags, &mut points[index].tags);
    }

    /// [`Point::move_tags_to_end`] for fields.
    fn move_fields_to_end(&mut self) {
        let index = self.index();
        let Batch { points, fields, .. } = &mut *self.batch;
        move_to_end(fields, &mut points[index].fields);
    }
}

/// The string at `span` in `batch`'s arena, read without checking the span.
///
/// Every string a `Point` reads goes through here, so that reads cost no bounds
/// and character-boundary checks: under WebAssembly those checks were a tenth of
/// the built-in chain's time (docs/PERFORMANCE.md, item 33).
///
/// Sound because a `Point` only ever reads valid batches, whose every span lies in
/// the arena on character boundaries (what `Batch::validate` checks):
/// - the input of [`crate::run`]'s loop is valid, which its unsafe entry points
///   require of their callers (the host checks every batch it passes to a guest);
/// - the output batch starts with the input's strings (its arena, moved or
///   copied), records and sources, and gains strings only through
///   `Batch::push_str`, whose spans are right by construction; records are only
///   ever copied from the input or the output.
#[inline]
fn text(batch: &Batch, span: Span) -> &str {
    debug_assert!(
        batch.arena.get(span.range()).is_some(),
        "span {span:?} is not a string of the batch's arena: the batch is invalid"
    );
    // SAFETY: `span` is a span of a valid batch (see above): in bounds, and on
    // character boundaries of the arena, which is a `String`.
    unsafe { batch.arena.get_unchecked(span.range()) }
}

/// Appends a copy of `input`'s point `index` to `out`, with copies of its original
/// tag and field records at the end of `out`'s. `out`'s arena starts with
/// `input`'s strings (so the point's string spans stay valid).
fn push_copy(out: &mut Batch, input: &Input<'_>, index: usize) {
    let point = input.points[index];
    let tags_start = out.tags.len() as u32;
    out.tags.extend_from_slice(input.tags_of(&point));
    let fields_start = out.fields.len() as u32;
    out.fields.extend_from_slice(input.fields_of(&point));
    out.points.push(PointRecord {
        tags: Span {
            start: tags_start,
            len: point.tags.len,
        },
        fields: Span {
            start: fields_start,
            len: point.fields.len,
        },
        ..point
    });
}

/// Copies the records `span` covers to the end of `records` and points `span` at
/// the copies, unless they are the last records already.
fn move_to_end<R: Copy>(records: &mut Vec<R>, span: &mut Span) {
    if span.end() != records.len() as u64 {
        let start = records.len() as u32;
        records.extend_from_within(span.range());
        span.start = start;
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{point, run};
    use crate::{FieldValue, Params, Point, Transform, Verdict};

    /// Looks keys up by name: same length as present keys but different, absent,
    /// duplicated (the first wins), then replaces, adds and removes by name.
    struct Lookups;

    impl Transform for Lookups {
        fn init(_: Params) -> Result<Self, String> {
            Ok(Lookups)
        }

        fn process(&mut self, p: &mut Point<'_>) -> Verdict {
            assert_eq!(p.tag("host"), Some("a"));
            assert_eq!(p.tag("dup"), Some("first"));
            assert_eq!(p.tag("hose"), None);
            assert_eq!(p.tag("hostname"), None);
            assert_eq!(p.tag(""), None);
            assert_eq!(p.field("x"), Some(FieldValue::Int(1)));
            assert_eq!(p.field("y"), None);
            assert_eq!(p.field("xx"), None);
            p.set_tag("dup", "changed");
            p.set_tag("new", "v");
            assert!(p.remove_tag("host"));
            assert!(!p.remove_tag("hose"));
            p.set_field("x", FieldValue::Int(2));
            p.set_field("z", FieldValue::Bool(true));
            assert!(p.remove_field("w"));
            assert!(!p.remove_field("x2"));
            Verdict::Keep
        }
    }

    #[test]
    fn finds_replaces_adds_and_removes_by_key() {
        let input = point("m")
            .tag("host", "a")
            .tag("dup", "first")
            .tag("dup", "second")
            .field("w", 0.5)
            .field("x", 1i64);
        let out = run(&mut Lookups, &[input]);
        assert_eq!(
            out.kept,
            vec![point("m")
                .tag("dup", "changed")
                .tag("dup", "second")
                .tag("new", "v")
                .field("x", 2i64)
                .field("z", true)]
        );
    }
}
