//! Tokenized units and packing them into rows of exactly `seq_len` tokens.

use std::collections::VecDeque;

use super::config::{LastRow, MaxLenPolicy};
use super::source::Doc;
use super::template::Template;
use super::ShardsError;
use crate::vocab::Tokenizer;

/// One tokenized document or example: `ids`, of which the first `prompt_len` are not trained on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unit {
    /// Token ids, BOS/EOS included as configured.
    pub ids: Vec<u32>,
    /// Leading tokens with loss_mask 0 (the SFT prompt; 0 for pretrain).
    pub prompt_len: u32,
}

impl Unit {
    /// Tokens the loss is computed on.
    pub fn trained(&self) -> u64 {
        (self.ids.len() - self.prompt_len as usize) as u64
    }
}

/// What encoding one document gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// A unit to use; `truncated` when an SFT example was cut to `seq_len`.
    Unit { unit: Unit, truncated: bool },
    /// Nothing to train on: empty text.
    Empty,
    /// An SFT example longer than `seq_len` under `max_len_policy = "drop"`, or whose prompt alone fills it.
    TooLong,
}

/// Turns documents into units (shared by all worker threads).
#[derive(Debug, Clone)]
pub struct Encoder {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// SFT template.
    pub template: Template,
    /// BOS first.
    pub add_bos: bool,
    /// EOS last (as `eos`).
    pub eos: Option<u32>,
    /// Row length.
    pub seq_len: usize,
    /// Over-long SFT examples.
    pub max_len_policy: MaxLenPolicy,
}

impl Encoder {
    /// Tokenizes one document.
    pub fn encode(&self, doc: &Doc) -> Result<Encoded, ShardsError> {
        match doc {
            Doc::Text(text) => {
                if text.trim().is_empty() {
                    return Ok(Encoded::Empty);
                }
                let mut ids = self.tokenizer.encode(text, self.add_bos)?;
                ids.extend(self.eos);
                Ok(Encoded::Unit { unit: Unit { ids, prompt_len: 0 }, truncated: false })
            }
            Doc::Example(rec) => {
                let (prompt, response) = self.template.format(rec);
                let prompt_ids = self.tokenizer.encode(&prompt, self.add_bos)?;
                let mut ids = self.tokenizer.encode(&(prompt + &response), self.add_bos)?;
                // The mask starts where the whole example's tokens leave the prompt's: normally at the
                // prompt's last token, one earlier if a token merges across the boundary (that token
                // carries response text, so it is trained on).
                let prompt_len = prompt_ids.iter().zip(&ids).take_while(|(a, b)| a == b).count();
                ids.extend(self.eos);
                let mut truncated = false;
                if ids.len() > self.seq_len {
                    if self.max_len_policy == MaxLenPolicy::Drop || prompt_len >= self.seq_len {
                        return Ok(Encoded::TooLong);
                    }
                    ids.truncate(self.seq_len);
                    truncated = true;
                }
                Ok(Encoded::Unit { unit: Unit { ids, prompt_len: prompt_len as u32 }, truncated })
            }
        }
    }
}

/// One output row: `seq_len` ids, their loss mask, and (packed SFT) example numbers, 0 on padding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    /// Token ids.
    pub ids: Vec<u32>,
    /// 1 = trained on.
    pub mask: Vec<u8>,
    /// Packed SFT: 1, 2, … per example in the row, 0 on padding.
    pub segments: Option<Vec<u32>>,
}

/// How units become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// Pretrain: one continuous token stream cut every `seq_len` tokens (documents span rows).
    Stream,
    /// SFT: one example per row, padded.
    OnePerRow,
    /// SFT: whole examples back to back while they fit, padded, with `segment_ids`.
    Segments,
}

/// Packs the units of one source into rows.
#[derive(Debug)]
pub struct Packer {
    packing: Packing,
    seq_len: usize,
    pad_id: u32,
    cur: Row,
    next_segment: u32,
    /// Finished rows, oldest first.
    pub ready: VecDeque<Row>,
}

impl Packer {
    /// A packer writing rows of `seq_len`, padding with `pad_id`.
    pub fn new(packing: Packing, seq_len: usize, pad_id: u32) -> Self {
        Packer { packing, seq_len, pad_id, cur: Packer::empty_row(packing), next_segment: 1, ready: VecDeque::new() }
    }

    fn empty_row(packing: Packing) -> Row {
        Row { segments: (packing == Packing::Segments).then(Vec::new), ..Row::default() }
    }

    /// Adds one unit (at most `seq_len` tokens unless packing is `Stream`).
    pub fn push(&mut self, unit: &Unit) {
        let prompt = unit.prompt_len as usize;
        match self.packing {
            Packing::Stream => {
                let mut at = 0;
                while at < unit.ids.len() {
                    let take = (self.seq_len - self.cur.ids.len()).min(unit.ids.len() - at);
                    self.cur.ids.extend_from_slice(&unit.ids[at..at + take]);
                    self.cur.mask.extend((at..at + take).map(|i| u8::from(i >= prompt)));
                    at += take;
                    if self.cur.ids.len() == self.seq_len {
                        self.emit();
                    }
                }
            }
            Packing::OnePerRow | Packing::Segments => {
                if self.packing == Packing::OnePerRow || self.cur.ids.len() + unit.ids.len() > self.seq_len {
                    self.pad_and_emit();
                }
                let seg = self.next_segment;
                self.cur.ids.extend_from_slice(&unit.ids);
                self.cur.mask.extend((0..unit.ids.len()).map(|i| u8::from(i >= prompt)));
                if let Some(s) = &mut self.cur.segments {
                    s.extend(std::iter::repeat_n(seg, unit.ids.len()));
                    self.next_segment += 1;
                }
                if self.packing == Packing::OnePerRow {
                    self.pad_and_emit();
                }
            }
        }
    }

    fn emit(&mut self) {
        let row = std::mem::replace(&mut self.cur, Packer::empty_row(self.packing));
        self.next_segment = 1;
        self.ready.push_back(row);
    }

    /// Pads the current row (if it holds anything) to `seq_len` and emits it.
    fn pad_and_emit(&mut self) {
        let n = self.cur.ids.len();
        if n == 0 {
            return;
        }
        self.cur.ids.resize(self.seq_len, self.pad_id);
        self.cur.mask.resize(self.seq_len, 0);
        if let Some(s) = &mut self.cur.segments {
            s.resize(self.seq_len, 0);
        }
        self.emit();
    }

    /// Ends the source: the partial row is padded, or (pretrain with `last_row = "drop"`) dropped.
    /// Returns the tokens dropped.
    pub fn finish(&mut self, last_row: LastRow) -> u64 {
        if self.packing == Packing::Stream && last_row == LastRow::Drop {
            let dropped = self.cur.ids.len() as u64;
            self.cur = Packer::empty_row(self.packing);
            return dropped;
        }
        self.pad_and_emit();
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(ids: &[u32], prompt_len: u32) -> Unit {
        Unit { ids: ids.to_vec(), prompt_len }
    }

    #[test]
    fn stream_packing_spans_rows_and_pads_or_drops_the_tail() {
        for (last, rows) in [(LastRow::Pad, 4), (LastRow::Drop, 3)] {
            let mut p = Packer::new(Packing::Stream, 4, 0);
            p.push(&unit(&[1, 10, 11, 2], 0));
            p.push(&unit(&[1, 12, 13, 14, 15, 2], 0));
            p.push(&unit(&[1, 16, 2], 0));
            let dropped = p.finish(last);
            let got: Vec<_> = p.ready.drain(..).collect();
            assert_eq!(got.len(), rows);
            assert_eq!(got[1].ids, [1, 12, 13, 14]);
            assert_eq!((got[2].ids.as_slice(), got[2].mask.as_slice()), (&[15, 2, 1, 16][..], &[1, 1, 1, 1][..]));
            if last == LastRow::Pad {
                assert_eq!(
                    (got[3].ids.as_slice(), got[3].mask.as_slice(), dropped),
                    (&[2, 0, 0, 0][..], &[1, 0, 0, 0][..], 0)
                );
            } else {
                assert_eq!(dropped, 1);
            }
        }
    }

    #[test]
    fn sft_rows_mask_prompts_and_number_segments() {
        let mut p = Packer::new(Packing::Segments, 6, 9);
        p.push(&unit(&[1, 5, 6, 2], 2));
        p.push(&unit(&[1, 7], 1));
        p.push(&unit(&[1, 8, 8, 8, 2], 3));
        p.finish(LastRow::Drop);
        let rows: Vec<_> = p.ready.drain(..).collect();
        assert_eq!(rows[0].ids, [1, 5, 6, 2, 1, 7]);
        assert_eq!(rows[0].mask, [0, 0, 1, 1, 0, 1]);
        assert_eq!(rows[0].segments.as_deref(), Some(&[1, 1, 1, 1, 2, 2][..]));
        assert_eq!(rows[1].ids, [1, 8, 8, 8, 2, 9]);
        assert_eq!(rows[1].mask, [0, 0, 0, 1, 1, 0]);
        assert_eq!(rows[1].segments.as_deref(), Some(&[1, 1, 1, 1, 1, 0][..]));
        let mut p = Packer::new(Packing::OnePerRow, 4, 9);
        p.push(&unit(&[1, 5], 1));
        p.push(&unit(&[1, 6, 2], 1));
        p.finish(LastRow::Pad);
        let rows: Vec<_> = p.ready.drain(..).map(|r| (r.ids, r.mask, r.segments)).collect();
        assert_eq!(rows, [(vec![1, 5, 9, 9], vec![0, 1, 0, 0], None), (vec![1, 6, 2, 9], vec![0, 1, 1, 0], None)]);
    }
}
