//! SentencePiece `ModelProto` (the `.model` file) read and written in pure Rust.
//!
//! The wire format is protobuf (proto2, `sentencepiece_model.proto`). Pieces are decoded into typed
//! structs; `TrainerSpec`, `NormalizerSpec` and every other field are kept as raw protobuf fields
//! in file order, read through typed accessors, so a round trip keeps fields this code does not
//! know (newer SentencePiece options, extensions) byte for byte.

use std::path::Path;

/// A protobuf decoding error at a byte offset of the input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("byte {offset}: {message}")]
pub struct DecodeError {
    /// Offset of the problem from the start of the file.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError { offset, message: message.into() })
}

/// The value of one protobuf field, by wire type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: strings, bytes, sub-messages, packed repeated fields.
    Bytes(Vec<u8>),
    /// Wire type 5.
    Fixed32(u32),
}

/// One field of a message: number and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Field number.
    pub number: u32,
    /// Value.
    pub value: Value,
}

/// A message kept as its raw fields in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// The fields, in the order they were read or set.
    pub fields: Vec<Field>,
}

fn read_varint(buf: &[u8], pos: &mut usize, base: usize) -> Result<u64, DecodeError> {
    let start = *pos;
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else { return err(base + start, "truncated varint (file cut short?)") };
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    err(base + start, "varint longer than 10 bytes")
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize, base: usize) -> Result<&'a [u8], DecodeError> {
    let start = *pos;
    match start.checked_add(n).filter(|&end| end <= buf.len()) {
        Some(end) => {
            *pos = end;
            Ok(&buf[start..end])
        }
        None => err(base + start, format!("field needs {n} bytes, only {} left (file cut short?)", buf.len() - start)),
    }
}

/// Reads a field key at `*pos`: field number and wire type.
fn read_key(buf: &[u8], pos: &mut usize, base: usize) -> Result<(u32, u64), DecodeError> {
    let at = *pos;
    let key = read_varint(buf, pos, base)?;
    match u32::try_from(key >> 3) {
        Ok(n) if n > 0 => Ok((n, key & 7)),
        _ => err(base + at, "bad field number (not a protobuf message)"),
    }
}

/// Reads the value of a field whose key was read at `at`; returns it and its file offset.
fn read_value(
    buf: &[u8],
    pos: &mut usize,
    base: usize,
    number: u32,
    wire: u64,
    at: usize,
) -> Result<(Value, usize), DecodeError> {
    let value = match wire {
        0 => Value::Varint(read_varint(buf, pos, base)?),
        1 => Value::Fixed64(u64::from_le_bytes(take(buf, pos, 8, base)?.try_into().expect("8 bytes"))),
        2 => {
            let n = usize::try_from(read_varint(buf, pos, base)?).unwrap_or(usize::MAX);
            Value::Bytes(take(buf, pos, n, base)?.to_vec())
        }
        5 => Value::Fixed32(u32::from_le_bytes(take(buf, pos, 4, base)?.try_into().expect("4 bytes"))),
        w => return err(base + at, format!("field {number} has wire type {w}, which SentencePiece never writes")),
    };
    let value_at = base + *pos - if let Value::Bytes(b) = &value { b.len() } else { 0 };
    Ok((value, value_at))
}

impl Message {
    /// Decodes `buf`, which starts at byte `base` of the file (for error offsets).
    pub fn decode(buf: &[u8], base: usize) -> Result<Self, DecodeError> {
        let mut fields = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let at = pos;
            let (number, wire) = read_key(buf, &mut pos, base)?;
            let (value, _) = read_value(buf, &mut pos, base, number, wire, at)?;
            fields.push(Field { number, value });
        }
        Ok(Message { fields })
    }

    /// Appends the encoding of every field to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for f in &self.fields {
            encode_field(out, f.number, &f.value);
        }
    }

    fn last(&self, number: u32) -> Option<&Value> {
        // proto2: the last occurrence of a non-repeated field wins.
        self.fields.iter().rev().find(|f| f.number == number).map(|f| &f.value)
    }

    /// Varint field `number` (last occurrence), if present.
    pub fn varint(&self, number: u32) -> Option<u64> {
        match self.last(number) {
            Some(Value::Varint(v)) => Some(*v),
            _ => None,
        }
    }

    /// Bool field, or `default` when absent.
    pub fn bool_or(&self, number: u32, default: bool) -> bool {
        self.varint(number).map_or(default, |v| v != 0)
    }

    /// int32 field (negative values are sign-extended varints), or `default`.
    pub fn i32_or(&self, number: u32, default: i32) -> i32 {
        self.varint(number).map_or(default, |v| v as i64 as i32)
    }

    /// float field, or `default`.
    pub fn f32_or(&self, number: u32, default: f32) -> f32 {
        match self.last(number) {
            Some(Value::Fixed32(v)) => f32::from_bits(*v),
            _ => default,
        }
    }

    /// Bytes/string field (last occurrence), if present.
    pub fn bytes(&self, number: u32) -> Option<&[u8]> {
        match self.last(number) {
            Some(Value::Bytes(b)) => Some(b),
            _ => None,
        }
    }

    /// String field, or `default` when absent or not UTF-8.
    pub fn str_or<'a>(&'a self, number: u32, default: &'a str) -> &'a str {
        self.bytes(number).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or(default)
    }

    /// Every occurrence of a repeated string field.
    pub fn strings(&self, number: u32) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| f.number == number)
            .filter_map(|f| match &f.value {
                Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// Sets field `number` to `value`: replaces its occurrences in place, or appends it.
    pub fn set(&mut self, number: u32, value: Value) {
        match self.fields.iter().position(|f| f.number == number) {
            Some(i) => {
                self.fields[i].value = value;
                let mut k = 0;
                self.fields.retain(|f| {
                    k += 1;
                    k - 1 <= i || f.number != number
                });
            }
            None => {
                // Keep fields sorted by number where we add, as protobuf serializers do.
                let at = self.fields.iter().position(|f| f.number > number).unwrap_or(self.fields.len());
                self.fields.insert(at, Field { number, value });
            }
        }
    }

    /// Sets a bool field.
    pub fn set_bool(&mut self, number: u32, v: bool) {
        self.set(number, Value::Varint(u64::from(v)));
    }

    /// Sets an int32 field (negative values as 10-byte varints, like protobuf).
    pub fn set_i32(&mut self, number: u32, v: i32) {
        self.set(number, Value::Varint(i64::from(v) as u64));
    }

    /// Sets a float field.
    pub fn set_f32(&mut self, number: u32, v: f32) {
        self.set(number, Value::Fixed32(v.to_bits()));
    }

    /// Sets a string field.
    pub fn set_str(&mut self, number: u32, v: &str) {
        self.set(number, Value::Bytes(v.as_bytes().to_vec()));
    }

    /// Replaces every occurrence of a repeated string field.
    pub fn set_strings(&mut self, number: u32, values: &[String]) {
        let at = self.fields.iter().position(|f| f.number == number);
        self.fields.retain(|f| f.number != number);
        let at = at.unwrap_or_else(|| self.fields.iter().position(|f| f.number > number).unwrap_or(self.fields.len()));
        let new = values.iter().map(|s| Field { number, value: Value::Bytes(s.as_bytes().to_vec()) });
        self.fields.splice(at..at, new);
    }
}

fn encode_field(out: &mut Vec<u8>, number: u32, value: &Value) {
    let wire = match value {
        Value::Varint(_) => 0,
        Value::Fixed64(_) => 1,
        Value::Bytes(_) => 2,
        Value::Fixed32(_) => 5,
    };
    write_varint(out, (u64::from(number) << 3) | wire);
    match value {
        Value::Varint(v) => write_varint(out, *v),
        Value::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bytes(b) => {
            write_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

/// `ModelProto.SentencePiece.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PieceType {
    /// A normal piece, used by the segmentation model.
    Normal,
    /// The unknown piece (exactly one).
    Unknown,
    /// Control symbols such as `<s>`, `</s>`: never produced from text.
    Control,
    /// User-defined symbols: always one token wherever they occur.
    UserDefined,
    /// Reserved, not produced.
    Unused,
    /// Byte-fallback pieces `<0x00>`..`<0xFF>`.
    Byte,
}

impl PieceType {
    fn from_wire(v: u64) -> Option<Self> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }

    fn wire(self) -> u64 {
        match self {
            PieceType::Normal => 1,
            PieceType::Unknown => 2,
            PieceType::Control => 3,
            PieceType::UserDefined => 4,
            PieceType::Unused => 5,
            PieceType::Byte => 6,
        }
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The piece text (`▁` for a space).
    pub piece: String,
    /// Score: merge priority (BPE) or log probability (unigram).
    pub score: f32,
    /// Kind of piece.
    pub kind: PieceType,
    /// Fields of this piece that are not piece/score/type, kept for the round trip.
    pub extra: Message,
}

impl Piece {
    /// A piece with no extra fields.
    pub fn new(piece: impl Into<String>, score: f32, kind: PieceType) -> Self {
        Piece { piece: piece.into(), score, kind, extra: Message::default() }
    }
}

/// The segmentation algorithm (`TrainerSpec.model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// Unigram language model (Viterbi).
    Unigram,
    /// Byte-pair encoding.
    Bpe,
    /// Whitespace-delimited words (read from models; `vocab train` makes bpe or unigram only).
    #[value(skip)]
    Word,
    /// Characters (read from models; `vocab train` makes bpe or unigram only).
    #[value(skip)]
    Char,
}

/// Field numbers of `TrainerSpec` that this crate reads or writes.
pub mod trainer {
    /// `TrainerSpec.input` (field 1).
    pub const INPUT: u32 = 1;
    /// `TrainerSpec.model_prefix` (field 2).
    pub const MODEL_PREFIX: u32 = 2;
    /// `TrainerSpec.model_type` (field 3).
    pub const MODEL_TYPE: u32 = 3;
    /// `TrainerSpec.vocab_size` (field 4).
    pub const VOCAB_SIZE: u32 = 4;
    /// `TrainerSpec.character_coverage` (field 10).
    pub const CHARACTER_COVERAGE: u32 = 10;
    /// `TrainerSpec.input_sentence_size` (field 11).
    pub const INPUT_SENTENCE_SIZE: u32 = 11;
    /// `TrainerSpec.num_threads` (field 16).
    pub const NUM_THREADS: u32 = 16;
    /// `TrainerSpec.max_sentencepiece_length` (field 20).
    pub const MAX_SENTENCEPIECE_LENGTH: u32 = 20;
    /// `TrainerSpec.treat_whitespace_as_suffix` (field 24).
    pub const TREAT_WHITESPACE_AS_SUFFIX: u32 = 24;
    /// `TrainerSpec.split_digits` (field 25).
    pub const SPLIT_DIGITS: u32 = 25;
    /// `TrainerSpec.allow_whitespace_only_pieces` (field 26).
    pub const ALLOW_WHITESPACE_ONLY_PIECES: u32 = 26;
    /// `TrainerSpec.byte_fallback` (field 35).
    pub const BYTE_FALLBACK: u32 = 35;
    /// `TrainerSpec.unk_id` (field 40).
    pub const UNK_ID: u32 = 40;
    /// `TrainerSpec.bos_id` (field 41).
    pub const BOS_ID: u32 = 41;
    /// `TrainerSpec.eos_id` (field 42).
    pub const EOS_ID: u32 = 42;
    /// `TrainerSpec.pad_id` (field 43).
    pub const PAD_ID: u32 = 43;
    /// `TrainerSpec.unk_surface` (field 44).
    pub const UNK_SURFACE: u32 = 44;
    /// `TrainerSpec.unk_piece` (field 45).
    pub const UNK_PIECE: u32 = 45;
    /// `TrainerSpec.bos_piece` (field 46).
    pub const BOS_PIECE: u32 = 46;
    /// `TrainerSpec.eos_piece` (field 47).
    pub const EOS_PIECE: u32 = 47;
}

/// Field numbers of `NormalizerSpec`.
pub mod normalizer {
    /// `NormalizerSpec.name` (field 1).
    pub const NAME: u32 = 1;
    /// `NormalizerSpec.precompiled_charsmap` (field 2).
    pub const PRECOMPILED_CHARSMAP: u32 = 2;
    /// `NormalizerSpec.add_dummy_prefix` (field 3).
    pub const ADD_DUMMY_PREFIX: u32 = 3;
    /// `NormalizerSpec.remove_extra_whitespaces` (field 4).
    pub const REMOVE_EXTRA_WHITESPACES: u32 = 4;
    /// `NormalizerSpec.escape_whitespaces` (field 5).
    pub const ESCAPE_WHITESPACES: u32 = 5;
}

const PIECES: u32 = 1;
const TRAINER_SPEC: u32 = 2;
const NORMALIZER_SPEC: u32 = 3;

/// A SentencePiece model file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelProto {
    /// The vocabulary; a piece's index is its id.
    pub pieces: Vec<Piece>,
    /// `TrainerSpec` (raw; see [`trainer`] for field numbers).
    pub trainer_spec: Message,
    /// `NormalizerSpec` (raw; see [`normalizer`]).
    pub normalizer_spec: Message,
    /// Every other top-level field (self-test data, denormalizer spec, extensions), in file order.
    pub rest: Message,
}

impl ModelProto {
    /// Decodes a `.model` file's bytes. Rejects what is not a SentencePiece model.
    pub fn from_bytes(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = ModelProto::default();
        let mut pos = 0;
        while pos < buf.len() {
            let at = pos;
            // Check the key before the value, so foreign files fail on what they are, not on a length.
            let (number, wire) = read_key(buf, &mut pos, 0)?;
            if (1..=5).contains(&number) && wire != 2 {
                return err(at, format!("field {number} has wire type {wire}: not a SentencePiece model"));
            }
            if !(1..=5).contains(&number) && number < 200 {
                return err(at, format!("unexpected top-level field {number}: not a SentencePiece model"));
            }
            let (value, body_at) = read_value(buf, &mut pos, 0, number, wire, at)?;
            match (number, value) {
                (PIECES, Value::Bytes(b)) => m.pieces.push(decode_piece(&b, body_at, m.pieces.len())?),
                (TRAINER_SPEC, Value::Bytes(b)) => m.trainer_spec = Message::decode(&b, body_at)?,
                (NORMALIZER_SPEC, Value::Bytes(b)) => m.normalizer_spec = Message::decode(&b, body_at)?,
                (number, value) => m.rest.fields.push(Field { number, value }),
            }
        }
        if m.pieces.is_empty() {
            return err(buf.len(), "no pieces: not a SentencePiece model");
        }
        Ok(m)
    }

    /// Reads and decodes a `.model` file.
    pub fn read(path: &Path) -> Result<Self, super::VocabError> {
        let bytes =
            std::fs::read(path).map_err(|e| super::VocabError::Load { path: path.into(), message: e.to_string() })?;
        Self::from_bytes(&bytes).map_err(|e| super::VocabError::Proto {
            path: path.into(),
            offset: e.offset,
            message: e.message,
        })
    }

    /// Encodes the model in SentencePiece's field order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pieces.len() * 16 + 256);
        let mut body = Vec::new();
        for p in &self.pieces {
            body.clear();
            encode_field(&mut body, 1, &Value::Bytes(p.piece.as_bytes().to_vec()));
            encode_field(&mut body, 2, &Value::Fixed32(p.score.to_bits()));
            // proto2 default NORMAL is left out, as SentencePiece's writer does.
            if p.kind != PieceType::Normal {
                encode_field(&mut body, 3, &Value::Varint(p.kind.wire()));
            }
            p.extra.encode(&mut body);
            encode_field(&mut out, PIECES, &Value::Bytes(body.clone()));
        }
        for (number, spec) in [(TRAINER_SPEC, &self.trainer_spec), (NORMALIZER_SPEC, &self.normalizer_spec)] {
            if spec.fields.is_empty() {
                continue;
            }
            let mut b = Vec::new();
            spec.encode(&mut b);
            encode_field(&mut out, number, &Value::Bytes(b));
        }
        self.rest.encode(&mut out);
        out
    }

    /// Writes the model atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::io::write_atomic(path, &self.to_bytes())
    }

    /// `TrainerSpec.model_type` (default unigram).
    pub fn model_type(&self) -> Result<ModelType, String> {
        match self.trainer_spec.varint(trainer::MODEL_TYPE).unwrap_or(1) {
            1 => Ok(ModelType::Unigram),
            2 => Ok(ModelType::Bpe),
            3 => Ok(ModelType::Word),
            4 => Ok(ModelType::Char),
            t => Err(format!("unknown model_type {t}")),
        }
    }

    /// `TrainerSpec.byte_fallback`.
    pub fn byte_fallback(&self) -> bool {
        self.trainer_spec.bool_or(trainer::BYTE_FALLBACK, false)
    }

    /// `NormalizerSpec.add_dummy_prefix`.
    pub fn add_dummy_prefix(&self) -> bool {
        self.normalizer_spec.bool_or(normalizer::ADD_DUMMY_PREFIX, true)
    }

    /// `NormalizerSpec.remove_extra_whitespaces`.
    pub fn remove_extra_whitespaces(&self) -> bool {
        self.normalizer_spec.bool_or(normalizer::REMOVE_EXTRA_WHITESPACES, true)
    }

    /// `NormalizerSpec.escape_whitespaces`.
    pub fn escape_whitespaces(&self) -> bool {
        self.normalizer_spec.bool_or(normalizer::ESCAPE_WHITESPACES, true)
    }

    /// `TrainerSpec.treat_whitespace_as_suffix`.
    pub fn treat_whitespace_as_suffix(&self) -> bool {
        self.trainer_spec.bool_or(trainer::TREAT_WHITESPACE_AS_SUFFIX, false)
    }

    /// `NormalizerSpec.precompiled_charsmap` when non-empty.
    pub fn precompiled_charsmap(&self) -> Option<&[u8]> {
        self.normalizer_spec.bytes(normalizer::PRECOMPILED_CHARSMAP).filter(|b| !b.is_empty())
    }

    /// `TrainerSpec.unk_surface` (default ` ⁇ `).
    pub fn unk_surface(&self) -> &str {
        self.trainer_spec.str_or(trainer::UNK_SURFACE, " \u{2047} ")
    }
}

fn decode_piece(buf: &[u8], base: usize, index: usize) -> Result<Piece, DecodeError> {
    let msg = Message::decode(buf, base)?;
    let mut piece = Piece::new(String::new(), 0.0, PieceType::Normal);
    for f in msg.fields {
        match (f.number, f.value) {
            (1, Value::Bytes(b)) => {
                piece.piece = String::from_utf8(b)
                    .map_err(|_| DecodeError { offset: base, message: format!("piece {index} is not UTF-8") })?
            }
            (2, Value::Fixed32(v)) => piece.score = f32::from_bits(v),
            (3, Value::Varint(v)) => {
                piece.kind = PieceType::from_wire(v).ok_or_else(|| DecodeError {
                    offset: base,
                    message: format!("piece {index} has unknown type {v}"),
                })?
            }
            (1..=3, _) => return err(base, format!("piece {index}: field with the wrong wire type")),
            (number, value) => piece.extra.fields.push(Field { number, value }),
        }
    }
    if piece.piece.is_empty() {
        return err(base, format!("piece {index} is empty"));
    }
    Ok(piece)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<u8> {
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-llama/tokenizer.model")).unwrap()
    }

    #[test]
    fn fixture_round_trips_byte_for_byte() {
        let bytes = fixture();
        let m = ModelProto::from_bytes(&bytes).unwrap();
        assert_eq!(m.pieces.len(), 1000);
        assert_eq!(m.pieces[0], Piece::new("<unk>", 0.0, PieceType::Unknown));
        assert_eq!(m.pieces[1].kind, PieceType::Control);
        assert_eq!(m.pieces[3].piece, "<0x00>");
        assert_eq!(m.pieces[258], Piece::new("<0xFF>", 0.0, PieceType::Byte));
        assert_eq!((m.pieces[260].piece.as_str(), m.pieces[260].score), ("he", -1.0));
        assert_eq!(m.model_type(), Ok(ModelType::Bpe));
        assert!(m.byte_fallback() && m.add_dummy_prefix() && !m.remove_extra_whitespaces());
        assert_eq!(m.trainer_spec.i32_or(trainer::PAD_ID, 0), -1);
        assert_eq!(m.trainer_spec.i32_or(trainer::VOCAB_SIZE, 0), 1000);
        assert_eq!(m.normalizer_spec.str_or(normalizer::NAME, ""), "identity");
        assert_eq!(m.to_bytes(), bytes);
    }

    #[test]
    fn unknown_fields_survive_and_setters_replace_in_place() {
        let mut m = ModelProto::from_bytes(&fixture()).unwrap();
        m.trainer_spec.set(999, Value::Bytes(b"future option".to_vec()));
        m.pieces[5].extra.fields.push(Field { number: 200, value: Value::Varint(7) });
        m.rest.fields.push(Field { number: 5, value: Value::Bytes(vec![8, 1]) });
        m.trainer_spec.set_i32(trainer::VOCAB_SIZE, 1234);
        m.trainer_spec.set_bool(trainer::SPLIT_DIGITS, false);
        let again = ModelProto::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(again, m);
        assert_eq!(again.trainer_spec.i32_or(trainer::VOCAB_SIZE, 0), 1234);
        assert!(!again.trainer_spec.bool_or(trainer::SPLIT_DIGITS, true));
        // In-place: the field order of the file is unchanged.
        let numbers: Vec<u32> = again.trainer_spec.fields.iter().map(|f| f.number).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 10, 16, 25, 26, 35, 40, 41, 42, 43, 999]);
    }

    #[test]
    fn truncated_and_foreign_files_are_rejected_with_offsets() {
        let bytes = fixture();
        let e = ModelProto::from_bytes(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(e.message.contains("cut short"), "{e}");
        assert!(e.offset > 13_000 && e.offset < bytes.len(), "{e}");
        let e = ModelProto::from_bytes(b"{\"version\": \"1.0\"}").unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(e.message.contains("not a SentencePiece model") || e.message.contains("wire type"), "{e}");
        let e = ModelProto::from_bytes(b"").unwrap_err();
        assert_eq!(e.message, "no pieces: not a SentencePiece model");
    }
}
