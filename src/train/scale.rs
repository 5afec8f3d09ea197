//! Dynamic loss scaling for `dtype = "f16"` (PyTorch `GradScaler`'s rule): the loss is multiplied by the
//! scale before the backward pass so small f16 gradients do not flush to zero; a step whose gradients hold
//! inf/NaN is skipped and the scale halved; after `loss_scale_window` good steps in a row it is doubled.

use serde::{Deserialize, Serialize};

/// Scale before the first step (`GradScaler`'s `init_scale`, 2^16).
pub const DEFAULT_INIT: f64 = 65_536.0;
/// Good steps before the scale doubles (`GradScaler`'s `growth_interval`).
pub const DEFAULT_WINDOW: usize = 2000;

/// The scaler's whole state; `trainer_state.json` keeps it so a resumed run scales exactly as the
/// uninterrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    /// The factor the next step's loss is multiplied by.
    pub scale: f64,
    /// Good steps since the scale last changed.
    pub good_steps: usize,
    /// Steps skipped for inf/NaN gradients so far in the run.
    pub overflow_steps: u64,
}

impl LossScale {
    /// A scaler starting at `init`.
    pub fn new(init: f64) -> Self {
        Self { scale: init, good_steps: 0, overflow_steps: 0 }
    }

    /// Records a step whose unscaled gradient norm was `grad_norm`; returns whether the optimizer may apply
    /// it (false: inf/NaN, the step is skipped and the scale halved).
    pub fn update(&mut self, grad_norm: f64, window: usize) -> bool {
        if !grad_norm.is_finite() {
            self.scale *= 0.5;
            self.good_steps = 0;
            self.overflow_steps += 1;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps >= window {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_halves_and_a_full_window_doubles() {
        let mut s = LossScale::new(1024.0);
        assert!(!s.update(f64::INFINITY, 3));
        assert!(!s.update(f64::NAN, 3));
        assert_eq!(s, LossScale { scale: 256.0, good_steps: 0, overflow_steps: 2 });
        assert!(s.update(1.5, 3) && s.update(0.5, 3));
        assert_eq!(s.scale, 256.0);
        assert!(s.update(0.5, 3));
        assert_eq!(s, LossScale { scale: 512.0, good_steps: 0, overflow_steps: 2 });
        // An overflow restarts the count of good steps.
        assert!(s.update(1.0, 3) && !s.update(f64::INFINITY, 3) && s.update(1.0, 3) && s.update(1.0, 3));
        assert_eq!(s, LossScale { scale: 256.0, good_steps: 2, overflow_steps: 3 });
    }
}
