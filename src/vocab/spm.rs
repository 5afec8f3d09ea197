//! SentencePiece encoding and decoding from a [`ModelProto`], following the C++ library
//! (`normalizer.cc`, `bpe_model.cc`, `unigram_model.cc`, `sentencepiece_processor.cc`) step by step so
//! that ids are exactly the ones `spm_encode` gives.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use tokenizers::normalizers::Precompiled;
use tokenizers::{NormalizedString, Normalizer};

use super::proto::{ModelProto, ModelType, PieceType};

/// SentencePiece's meta symbol for a space.
pub const SPACE: &str = "\u{2581}";

/// A SentencePiece model ready to encode and decode.
pub struct SpmModel {
    proto: ModelProto,
    kind: ModelType,
    /// Normal, user-defined and unused pieces: what segmentation may produce.
    pieces: HashMap<String, u32>,
    /// Control, unknown and byte pieces.
    reserved: HashMap<String, u32>,
    user_defined: Vec<String>,
    unk: u32,
    /// Ids of `<0x00>`..`<0xFF>` when byte fallback is on.
    bytes: Option<Vec<u32>>,
    precompiled: Option<Precompiled>,
    /// Longest piece, in bytes (bounds the unigram lattice).
    max_piece_bytes: usize,
    min_score: f32,
    max_score: f32,
}

impl std::fmt::Debug for SpmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpmModel").field("kind", &self.kind).field("pieces", &self.proto.pieces.len()).finish()
    }
}

/// `<0xAB>` → 0xAB.
pub fn byte_of_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// 0xAB → `<0xAB>`.
pub fn byte_piece(b: u8) -> String {
    format!("<0x{b:02X}>")
}

impl SpmModel {
    /// Checks the model the way SentencePiece does when loading it and builds the lookup tables.
    pub fn new(proto: ModelProto) -> Result<Self, String> {
        let kind = proto.model_type()?;
        if !matches!(kind, ModelType::Bpe | ModelType::Unigram) {
            return Err(format!("model_type {kind:?} is not supported (only bpe and unigram)"));
        }
        let byte_fallback = proto.byte_fallback();
        let mut pieces = HashMap::with_capacity(proto.pieces.len());
        let mut reserved = HashMap::new();
        let mut user_defined = Vec::new();
        let mut unk = None;
        let mut bytes = vec![u32::MAX; 256];
        let (mut min_score, mut max_score) = (f32::INFINITY, f32::NEG_INFINITY);
        for (id, p) in proto.pieces.iter().enumerate() {
            let id = id as u32;
            let segmentable = matches!(p.kind, PieceType::Normal | PieceType::UserDefined | PieceType::Unused);
            let map = if segmentable { &mut pieces } else { &mut reserved };
            if map.insert(p.piece.clone(), id).is_some() {
                return Err(format!("piece {id} {:?} is already defined", p.piece));
            }
            match p.kind {
                PieceType::UserDefined => user_defined.push(p.piece.clone()),
                PieceType::Unknown if unk.is_some() => return Err("more than one unknown piece".into()),
                PieceType::Unknown => unk = Some(id),
                PieceType::Byte => {
                    if !byte_fallback {
                        return Err(format!("byte piece {:?} found although byte_fallback is false", p.piece));
                    }
                    let b = byte_of_piece(&p.piece).ok_or_else(|| format!("byte piece {:?} is invalid", p.piece))?;
                    bytes[usize::from(b)] = id;
                }
                PieceType::Normal => {
                    min_score = min_score.min(p.score);
                    max_score = max_score.max(p.score);
                }
                _ => {}
            }
        }
        let unk = unk.ok_or("no unknown piece (<unk>) defined")?;
        if byte_fallback && bytes.contains(&u32::MAX) {
            return Err("byte_fallback is on but not all 256 byte pieces <0x00>..<0xFF> are there".into());
        }
        let precompiled = match proto.precompiled_charsmap() {
            Some(map) => Some(Precompiled::from(map).map_err(|e| format!("bad precompiled_charsmap: {e}"))?),
            None => None,
        };
        // Longest match first, as the C++ prefix matcher does.
        user_defined.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let max_piece_bytes = pieces.keys().map(String::len).max().unwrap_or(1);
        Ok(SpmModel {
            kind,
            pieces,
            reserved,
            user_defined,
            unk,
            bytes: byte_fallback.then_some(bytes),
            precompiled,
            max_piece_bytes,
            min_score,
            max_score,
            proto,
        })
    }

    /// The model this was built from.
    pub fn proto(&self) -> &ModelProto {
        &self.proto
    }

    /// Number of pieces.
    pub fn len(&self) -> usize {
        self.proto.pieces.len()
    }

    /// True when the model has no pieces (never, for a loaded model).
    pub fn is_empty(&self) -> bool {
        self.proto.pieces.is_empty()
    }

    /// Id of `piece` as `PieceToId` gives it (unknown id when absent).
    pub fn piece_to_id(&self, piece: &str) -> u32 {
        self.reserved.get(piece).or_else(|| self.pieces.get(piece)).copied().unwrap_or(self.unk)
    }

    /// Id of `piece` when it is in the vocabulary.
    pub fn lookup(&self, piece: &str) -> Option<u32> {
        self.reserved.get(piece).or_else(|| self.pieces.get(piece)).copied()
    }

    /// The unknown id.
    pub fn unk_id(&self) -> u32 {
        self.unk
    }

    /// The text SentencePiece segments: charsmap normalization, whitespace rules, `▁` for spaces.
    pub fn normalize(&self, text: &str) -> String {
        let text = match &self.precompiled {
            Some(p) => {
                let mut n = NormalizedString::from(text);
                // Precompiled::normalize never fails; an error would leave the text unnormalized.
                if p.normalize(&mut n).is_ok() {
                    Cow::Owned(n.get().to_string())
                } else {
                    Cow::Borrowed(text)
                }
            }
            None => Cow::Borrowed(text),
        };
        let remove_extra = self.proto.remove_extra_whitespaces();
        let dummy = self.proto.add_dummy_prefix();
        let suffix = self.proto.treat_whitespace_as_suffix();
        let space = if self.proto.escape_whitespaces() { SPACE } else { " " };
        let mut s = text.as_ref();
        if remove_extra {
            s = s.trim_matches(' ');
        }
        let mut out = String::with_capacity(s.len() + s.len() / 4 + 4);
        if s.is_empty() {
            return out;
        }
        if dummy && !suffix {
            out.push_str(space);
        }
        let mut prev_space = false;
        for c in s.chars() {
            if c == ' ' {
                if !(remove_extra && prev_space) {
                    out.push_str(space);
                }
                prev_space = true;
            } else {
                out.push(c);
                prev_space = false;
            }
        }
        if dummy && suffix {
            out.push_str(space);
        }
        out
    }

    /// Ids of `text` (no BOS/EOS).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_normalized(&self.normalize(text))
    }

    /// Ids of text that is already normalized (`▁` for spaces, no dummy prefix added): segmentation
    /// and byte fallback only. Used to split a piece of another vocabulary into this one's pieces.
    pub fn encode_normalized(&self, normalized: &str) -> Vec<u32> {
        let segments = match self.kind {
            ModelType::Unigram => self.segment_unigram(normalized),
            _ => self.segment_bpe(normalized),
        };
        let mut ids = Vec::with_capacity(segments.len());
        for (piece, id) in segments {
            match (&self.bytes, id == self.unk) {
                (Some(bytes), true) => ids.extend(piece.bytes().map(|b| bytes[usize::from(b)])),
                _ => ids.push(id),
            }
        }
        ids
    }

    /// Length in bytes of the symbol starting `s`: a user-defined piece (frozen) or one character.
    fn prefix_match(&self, s: &str) -> (usize, bool) {
        match self.user_defined.iter().find(|u| s.starts_with(u.as_str())) {
            Some(u) => (u.len(), true),
            None => (s.chars().next().map_or(1, char::len_utf8), false),
        }
    }

    fn is_unused(&self, id: u32) -> bool {
        self.proto.pieces[id as usize].kind == PieceType::Unused
    }

    fn score(&self, id: u32) -> f32 {
        self.proto.pieces[id as usize].score
    }

    /// `bpe_model.cc` `Model::SampleEncode` without dropout: merge the best-scoring adjacent pair
    /// (leftmost on ties) until none is in the vocabulary, then split unused pieces back.
    fn segment_bpe<'a>(&self, text: &'a str) -> Vec<(&'a str, u32)> {
        struct Sym {
            prev: usize,
            next: usize,
            freeze: bool,
            start: usize,
            len: usize,
        }
        const NONE: usize = usize::MAX;
        let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
        let mut at = 0;
        while at < text.len() {
            let (len, freeze) = self.prefix_match(&text[at..]);
            let i = syms.len();
            syms.push(Sym { prev: if i == 0 { NONE } else { i - 1 }, next: i + 1, freeze, start: at, len });
            at += len;
        }
        if let Some(last) = syms.last_mut() {
            last.next = NONE;
        }
        let mut agenda = BinaryHeap::new();
        let mut rev_merge: HashMap<&str, (&str, &str)> = HashMap::new();
        let add_pair = |syms: &[Sym],
                        l: usize,
                        r: usize,
                        agenda: &mut BinaryHeap<Pair>,
                        rev: &mut HashMap<&'a str, (&'a str, &'a str)>| {
            if l == NONE || r == NONE || syms[l].freeze || syms[r].freeze {
                return;
            }
            let piece = &text[syms[l].start..syms[l].start + syms[l].len + syms[r].len];
            let Some(&id) = self.pieces.get(piece) else { return };
            agenda.push(Pair { score: self.score(id), left: l, right: r, size: piece.len() });
            if self.is_unused(id) {
                let lp = &text[syms[l].start..syms[l].start + syms[l].len];
                let rp = &text[syms[r].start..syms[r].start + syms[r].len];
                rev.insert(piece, (lp, rp));
            }
        };
        for i in 1..syms.len() {
            add_pair(&syms, i - 1, i, &mut agenda, &mut rev_merge);
        }
        while let Some(top) = agenda.pop() {
            let (l, r) = (top.left, top.right);
            // Stale entry: one side was merged away or grew since it was queued.
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != top.size {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[l].next = syms[r].next;
            if syms[r].next != NONE {
                let n = syms[r].next;
                syms[n].prev = l;
            }
            syms[r].len = 0;
            add_pair(&syms, syms[l].prev, l, &mut agenda, &mut rev_merge);
            add_pair(&syms, l, syms[l].next, &mut agenda, &mut rev_merge);
        }
        let mut out = Vec::with_capacity(syms.len());
        let mut i = if syms.is_empty() { NONE } else { 0 };
        while i != NONE {
            self.resegment(&text[syms[i].start..syms[i].start + syms[i].len], &rev_merge, &mut out);
            i = syms[i].next;
        }
        out
    }

    fn resegment<'a>(&self, w: &'a str, rev: &HashMap<&'a str, (&'a str, &'a str)>, out: &mut Vec<(&'a str, u32)>) {
        let id = self.piece_to_id(w);
        match rev.get(w) {
            Some(&(l, r)) if self.is_unused(id) => {
                self.resegment(l, rev, out);
                self.resegment(r, rev, out);
            }
            _ => out.push((w, id)),
        }
    }

    /// `unigram_model.cc` `Model::EncodeOptimized`: Viterbi over all pieces, one-character unknown
    /// nodes scored `min_score - 10` where no piece covers a character; runs of unknowns merged.
    fn segment_unigram<'a>(&self, text: &'a str) -> Vec<(&'a str, u32)> {
        const UNK_PENALTY: f32 = 10.0;
        #[derive(Clone, Copy)]
        struct Best {
            id: u32,
            start: usize,
            score: f32,
            set: bool,
        }
        let n = text.len();
        let unk_score = self.min_score - UNK_PENALTY;
        let mut best = vec![Best { id: 0, start: 0, score: 0.0, set: false }; n + 1];
        best[0].set = true;
        let mut start = 0;
        while start < n {
            let here = best[start].score;
            let ch_len = text[start..].chars().next().map_or(1, char::len_utf8);
            let mut has_single = false;
            let mut end = start;
            for c in text[start..].chars() {
                end += c.len_utf8();
                if end - start > self.max_piece_bytes {
                    break;
                }
                let Some(&id) = self.pieces.get(&text[start..end]) else { continue };
                if self.is_unused(id) {
                    continue;
                }
                let len = (end - start) as f32;
                let piece_kind = self.proto.pieces[id as usize].kind;
                let s = if piece_kind == PieceType::UserDefined { len * self.max_score - 0.1 } else { self.score(id) };
                let cand = here + s;
                if !best[end].set || cand > best[end].score {
                    best[end] = Best { id, start, score: cand, set: true };
                }
                has_single |= end - start == ch_len;
            }
            if !has_single {
                let end = start + ch_len;
                let cand = here + unk_score;
                if !best[end].set || cand > best[end].score {
                    best[end] = Best { id: self.unk, start, score: cand, set: true };
                }
            }
            start += ch_len;
        }
        let mut out: Vec<(&str, u32)> = Vec::new();
        let mut end = n;
        while end > 0 {
            let b = best[end];
            match out.last_mut() {
                // Consecutive unknown characters become one unknown token, as SentencePiece emits them.
                Some(last) if b.id == self.unk && last.1 == self.unk => {
                    *last = (&text[b.start..end + last.0.len()], self.unk)
                }
                _ => out.push((&text[b.start..end], b.id)),
            }
            end = b.start;
        }
        out.reverse();
        out
    }

    /// Text of `ids` by SentencePiece's rules: control pieces vanish, unknown ids become ` ⁇ `,
    /// byte runs decode as UTF-8 with one U+FFFD per invalid byte, `▁` becomes a space, and the
    /// dummy-prefix space of the first piece is dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        let mut text = String::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut bos_ws = self.proto.add_dummy_prefix() && !self.proto.treat_whitespace_as_suffix();
        for &id in ids {
            let p = self
                .proto
                .pieces
                .get(id as usize)
                .ok_or_else(|| format!("id {id} is out of range (vocabulary size {})", self.len()))?;
            if p.kind == PieceType::Byte {
                pending.push(byte_of_piece(&p.piece).ok_or_else(|| format!("byte piece {:?} is invalid", p.piece))?);
                continue;
            }
            flush_bytes(&mut pending, &mut text);
            match p.kind {
                PieceType::Control => continue,
                PieceType::Unknown => text.push_str(self.proto.unk_surface()),
                _ => {
                    let mut piece = p.piece.as_str();
                    if bos_ws && text.is_empty() {
                        piece = piece.strip_prefix(SPACE).unwrap_or(piece);
                    }
                    text.push_str(&piece.replace(SPACE, " "));
                }
            }
            bos_ws = false;
        }
        flush_bytes(&mut pending, &mut text);
        if self.proto.treat_whitespace_as_suffix() && self.proto.add_dummy_prefix() {
            if let Some(t) = text.strip_suffix(' ') {
                text.truncate(t.len());
            }
        }
        Ok(text)
    }
}

/// Appends a run of byte-fallback bytes: valid UTF-8 kept, one U+FFFD per invalid byte.
fn flush_bytes(bytes: &mut Vec<u8>, text: &mut String) {
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                text.push_str(s);
                break;
            }
            Err(e) => {
                let good = e.valid_up_to();
                text.push_str(std::str::from_utf8(&rest[..good]).expect("checked valid"));
                text.push('\u{FFFD}');
                rest = &rest[good + 1..];
            }
        }
    }
    bytes.clear();
}

/// A candidate merge in the BPE agenda.
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Pair {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pair {
    /// Higher score first; on equal scores the leftmost pair first.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then_with(|| o.left.cmp(&self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_bytes_become_one_replacement_char_each() {
        let mut t = String::new();
        flush_bytes(&mut vec![0xE4, 0xB8, b'a', 0xF0, 0x9F, 0x98, 0x80, 0xFF], &mut t);
        assert_eq!(t, "\u{FFFD}\u{FFFD}a\u{1F600}\u{FFFD}");
    }

    #[test]
    fn byte_pieces_parse_both_ways() {
        assert_eq!(byte_of_piece("<0x0A>"), Some(10));
        assert_eq!(byte_of_piece("<0xff>"), Some(255));
        assert_eq!(byte_of_piece("<0x100>"), None);
        assert_eq!(byte_piece(10), "<0x0A>");
    }
}
