//! LLaMA in candle, HF checkpoint load/save, embedding resize.

pub mod resize;
