//! Losses, their gradients, and importance-invariant updates.
//!
//! An invariant update (Karampatziakis and Langford, "Online importance
//! weight aware updates", 2011) integrates the gradient flow of one reading
//! in closed form instead of taking one straight step along it. The new
//! prediction moves towards the label and never past it, whatever the
//! learning rate: this is what keeps an online model stable when the target
//! is in minutes (0 to 300) rather than around 1.

use serde::{Deserialize, Serialize};

use crate::error::{check, ModelError};

/// A loss function over a raw prediction (the margin, for [`Loss::Logistic`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Loss {
    /// `0.5 (p - y)^2`, regression.
    #[default]
    Squared,
    /// `|p - y|`, regression; its optimum is the median.
    Absolute,
    /// Squared within `delta` of the label, absolute beyond: robust regression.
    Huber {
        /// Where the loss turns from squared to linear, in target units.
        delta: f64,
    },
    /// Log loss of `sigmoid(p)` against a 0/1 label: classification.
    Logistic,
}

/// The logistic function, safe for any finite input.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

impl Loss {
    /// Checks the loss's own parameters.
    pub fn validate(&self) -> Result<(), ModelError> {
        if let Loss::Huber { delta } = *self {
            check(
                delta.is_finite() && delta > 0.0,
                "loss.delta",
                "a finite number > 0",
                delta,
            )?;
        }
        Ok(())
    }

    /// True for the classification loss.
    pub fn is_classification(&self) -> bool {
        matches!(self, Loss::Logistic)
    }

    /// Maps a raw prediction to the model's output (a probability for logistic).
    pub fn output(&self, raw: f64) -> f64 {
        match self {
            Loss::Logistic => sigmoid(raw),
            _ => raw,
        }
    }

    /// The loss of raw prediction `raw` against label `y`.
    pub fn loss(&self, raw: f64, y: f64) -> f64 {
        let r = raw - y;
        match *self {
            Loss::Squared => 0.5 * r * r,
            Loss::Absolute => r.abs(),
            Loss::Huber { delta } => {
                if r.abs() <= delta {
                    0.5 * r * r
                } else {
                    delta * (r.abs() - 0.5 * delta)
                }
            }
            // log(1 + exp(raw)) - y raw, written to avoid overflow
            Loss::Logistic => raw.max(0.0) + (-raw.abs()).exp().ln_1p() - y * raw,
        }
    }

    /// The derivative of the loss with respect to the raw prediction.
    pub fn gradient(&self, raw: f64, y: f64) -> f64 {
        let r = raw - y;
        match *self {
            Loss::Squared => r,
            Loss::Absolute => {
                if r > 0.0 {
                    1.0
                } else if r < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Loss::Huber { delta } => r.clamp(-delta, delta),
            Loss::Logistic => sigmoid(raw) - y,
        }
    }

    /// The curvature used by second-order steps: the second derivative, or
    /// for the non-smooth losses the iteratively-reweighted-least-squares weight.
    pub fn curvature(&self, raw: f64, y: f64) -> f64 {
        let r = (raw - y).abs();
        match *self {
            Loss::Squared => 1.0,
            Loss::Absolute => 1.0 / r.max(1e-3),
            Loss::Huber { delta } => {
                if r <= delta {
                    1.0
                } else {
                    delta / r
                }
            }
            Loss::Logistic => {
                let p = sigmoid(raw);
                (p * (1.0 - p)).max(1e-6)
            }
        }
    }

    /// The importance-invariant update for one reading.
    ///
    /// `eta` is the step size and `ppu` ("prediction per update") is how much
    /// the raw prediction moves per unit of update, `sum_i rate_i x_i^2`.
    /// Returns `u` such that adding `u * rate_i * x_i` to every weight moves
    /// the raw prediction by `u * ppu`: the exact solution of the gradient
    /// flow `dp/dh = -ppu * loss'(p)` over `h` in `[0, eta]`, which moves the
    /// prediction towards `y` and never past it.
    pub fn invariant_update(&self, raw: f64, y: f64, eta: f64, ppu: f64) -> f64 {
        if ppu <= 0.0 || eta <= 0.0 {
            return 0.0;
        }
        let h = eta * ppu;
        if h < 1e-9 {
            // first-order expansion, numerically safer for tiny steps
            return -eta * self.gradient(raw, y);
        }
        let r = y - raw;
        let dp = match *self {
            Loss::Squared => r * -(-h).exp_m1(),
            Loss::Absolute => r.signum() * h.min(r.abs()),
            Loss::Huber { delta } => {
                let a = r.abs();
                if a <= delta {
                    r * -(-h).exp_m1()
                } else {
                    // linear until the residual reaches delta, then squared
                    let h_linear = (a - delta) / delta;
                    if h <= h_linear {
                        r.signum() * h * delta
                    } else {
                        r.signum() * (a - delta * (-(h - h_linear)).exp())
                    }
                }
            }
            Loss::Logistic => {
                let l = if y > 0.5 { 1.0 } else { -1.0 };
                let q = l * raw;
                if q > 30.0 {
                    // already confident and right: the flow barely moves
                    return -eta * self.gradient(raw, y);
                }
                // q + exp(q) grows by h along the flow: solve q' + exp(q') = c
                let c = h + q + q.exp();
                let q_new = c - lambert_w_exp(c);
                l * q_new - raw
            }
        };
        dp / ppu
    }
}

/// `W(exp(x))`, the Lambert W function of `exp(x)`: the `w > 0` with `w + ln w = x`.
fn lambert_w_exp(x: f64) -> f64 {
    let mut w = if x > 1.0 { x - x.ln() } else { x.exp() };
    for _ in 0..50 {
        let f = w + w.ln() - x;
        let step = f / (1.0 + 1.0 / w);
        let next = (w - step).max(w * 1e-3);
        if (next - w).abs() <= 1e-15 * w.max(1.0) {
            return next;
        }
        w = next;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn gradients_match_finite_differences() {
        let losses = [Loss::Squared, Loss::Huber { delta: 2.0 }, Loss::Logistic];
        for loss in losses {
            for &(p, y) in &[(0.3, 1.0), (-1.7, 0.0), (5.0, 1.0), (3.5, 0.0)] {
                let e = 1e-6;
                let numeric = (loss.loss(p + e, y) - loss.loss(p - e, y)) / (2.0 * e);
                assert_relative_eq!(loss.gradient(p, y), numeric, epsilon = 1e-6);
            }
        }
    }

    #[test]
    fn lambert_w_solves_its_equation() {
        for x in [-20.0, -1.0, 0.0, 0.5, 1.0, 3.0, 50.0, 700.0] {
            let w = lambert_w_exp(x);
            assert_relative_eq!(w + w.ln(), x, epsilon = 1e-9, max_relative = 1e-12);
        }
    }

    #[test]
    fn invariant_updates_never_overshoot() {
        for loss in [Loss::Squared, Loss::Absolute, Loss::Huber { delta: 1.0 }] {
            for eta in [1e-3, 0.1, 1.0, 10.0, 1e6] {
                let (p, y, ppu) = (2.0, 50.0, 3.0);
                let u = loss.invariant_update(p, y, eta, ppu);
                let moved = p + u * ppu;
                assert!(
                    moved > p && moved <= y + 1e-9,
                    "{loss:?} eta {eta}: {moved}"
                );
            }
        }
        for eta in [1e-3, 0.1, 10.0, 1e6] {
            let u = Loss::Logistic.invariant_update(-1.0, 1.0, eta, 2.0);
            assert!(u > 0.0);
            let u = Loss::Logistic.invariant_update(1.0, 0.0, eta, 2.0);
            assert!(u < 0.0);
        }
    }

    #[test]
    fn small_invariant_steps_match_gradient_steps() {
        for loss in [Loss::Squared, Loss::Huber { delta: 0.5 }, Loss::Logistic] {
            let (p, y, eta, ppu) = (0.4, 1.0, 1e-5, 0.7);
            let u = loss.invariant_update(p, y, eta, ppu);
            assert_relative_eq!(u, -eta * loss.gradient(p, y), max_relative = 1e-4);
        }
    }

    #[test]
    fn squared_invariant_update_is_closed_form() {
        // dp = (y - p)(1 - exp(-eta ppu)), hand-computed for y - p = 10, eta ppu = 0.5
        let u = Loss::Squared.invariant_update(0.0, 10.0, 0.25, 2.0);
        assert_relative_eq!(u * 2.0, 10.0 * (1.0 - (-0.5f64).exp()), epsilon = 1e-12);
    }
}
