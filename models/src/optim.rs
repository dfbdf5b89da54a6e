//! Optimiser hyper-parameters and per-weight optimiser state.
//!
//! The learning step itself lives in [`crate::linear`], which owns the
//! weights; this file says what each optimiser is, checks its parameters
//! and holds its state so that a snapshot carries it.

use serde::{Deserialize, Serialize};

use crate::error::{check, ModelError};

/// Which optimiser updates the weights, with its hyper-parameters.
///
/// In TOML: `optimizer = { kind = "adagrad", learning_rate = 0.1 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerParams {
    /// Plain stochastic gradient descent, step `learning_rate / t^power_t`.
    Sgd {
        /// Initial step size.
        #[serde(default = "sgd_lr")]
        learning_rate: f64,
        /// Decay exponent of the step size (0 = constant).
        #[serde(default = "sgd_power_t")]
        power_t: f64,
    },
    /// AdaGrad: per-weight steps shrink with the sum of squared gradients.
    Adagrad {
        /// Step size.
        #[serde(default = "adagrad_lr")]
        learning_rate: f64,
        /// Added to the denominator for stability.
        #[serde(default = "epsilon")]
        epsilon: f64,
    },
    /// Adam with bias correction.
    Adam {
        /// Step size.
        #[serde(default = "adam_lr")]
        learning_rate: f64,
        /// Decay of the first moment.
        #[serde(default = "beta1")]
        beta1: f64,
        /// Decay of the second moment.
        #[serde(default = "beta2")]
        beta2: f64,
        /// Added to the denominator for stability.
        #[serde(default = "epsilon")]
        epsilon: f64,
    },
    /// FTRL-Proximal (McMahan et al. 2013); uses the model's `l1` and `l2`.
    Ftrl {
        /// Per-coordinate learning-rate numerator.
        #[serde(default = "ftrl_alpha")]
        alpha: f64,
        /// Per-coordinate learning-rate smoothing.
        #[serde(default = "ftrl_beta")]
        beta: f64,
    },
    /// Online Newton step: keeps the inverse curvature (a Gaussian posterior
    /// covariance) of all weights and updates it by Sherman-Morrison. Exact
    /// recursive least squares for the squared loss, the Laplace (EKF)
    /// update for the logistic loss. Very sample-efficient; O(d²) per reading.
    Newton {
        /// Prior variance of each weight (the inverse of an L2 penalty).
        #[serde(default = "newton_prior")]
        prior_variance: f64,
        /// Forgetting factor in (0, 1]; below 1 the model tracks drift.
        #[serde(default = "newton_forgetting")]
        forgetting: f64,
    },
    /// Normalised online learning in the style of Vowpal Wabbit
    /// (`--normalized`, optionally `--adaptive`, `--invariant`): steps are
    /// scaled by each feature's largest magnitude seen, so no feature
    /// scaling is needed, and invariant updates never overshoot the label.
    Normalized {
        /// Step size.
        #[serde(default = "normalized_lr")]
        learning_rate: f64,
        /// Global decay exponent when not adaptive.
        #[serde(default = "normalized_power_t")]
        power_t: f64,
        /// Per-weight AdaGrad scaling on top of the normalisation.
        #[serde(default)]
        adaptive: bool,
        /// Importance-invariant (never overshooting) updates.
        #[serde(default = "yes")]
        invariant: bool,
    },
}

fn sgd_lr() -> f64 {
    0.01
}
fn sgd_power_t() -> f64 {
    0.25
}
fn adagrad_lr() -> f64 {
    0.1
}
fn adam_lr() -> f64 {
    0.01
}
fn epsilon() -> f64 {
    1e-8
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn ftrl_alpha() -> f64 {
    0.05
}
fn ftrl_beta() -> f64 {
    1.0
}
fn normalized_lr() -> f64 {
    1.0
}
fn normalized_power_t() -> f64 {
    0.5
}
fn newton_prior() -> f64 {
    1.0
}
fn newton_forgetting() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

impl Default for OptimizerParams {
    /// The default: AdaGrad with step 0.1. With the regression target
    /// standardised online (the default), it is stable on both benchmark
    /// streams: its steps are bounded by the learning rate, whatever the
    /// scale of the gradients.
    fn default() -> Self {
        OptimizerParams::Adagrad {
            learning_rate: adagrad_lr(),
            epsilon: epsilon(),
        }
    }
}

fn positive(v: f64, name: &'static str) -> Result<(), ModelError> {
    check(v.is_finite() && v > 0.0, name, "a finite number > 0", v)
}

fn exponent(v: f64, name: &'static str) -> Result<(), ModelError> {
    check(
        v.is_finite() && (0.0..=1.0).contains(&v),
        name,
        "between 0 and 1",
        v,
    )
}

fn decay(v: f64, name: &'static str) -> Result<(), ModelError> {
    check(
        v.is_finite() && (0.0..1.0).contains(&v),
        name,
        "in [0, 1)",
        v,
    )
}

impl OptimizerParams {
    /// Checks every hyper-parameter against its valid range.
    pub fn validate(&self) -> Result<(), ModelError> {
        match *self {
            OptimizerParams::Sgd {
                learning_rate,
                power_t,
            } => {
                positive(learning_rate, "optimizer.learning_rate")?;
                exponent(power_t, "optimizer.power_t")
            }
            OptimizerParams::Adagrad {
                learning_rate,
                epsilon,
            } => {
                positive(learning_rate, "optimizer.learning_rate")?;
                positive(epsilon, "optimizer.epsilon")
            }
            OptimizerParams::Adam {
                learning_rate,
                beta1,
                beta2,
                epsilon,
            } => {
                positive(learning_rate, "optimizer.learning_rate")?;
                decay(beta1, "optimizer.beta1")?;
                decay(beta2, "optimizer.beta2")?;
                positive(epsilon, "optimizer.epsilon")
            }
            OptimizerParams::Ftrl { alpha, beta } => {
                positive(alpha, "optimizer.alpha")?;
                check(
                    beta.is_finite() && beta >= 0.0,
                    "optimizer.beta",
                    "a finite number >= 0",
                    beta,
                )
            }
            OptimizerParams::Newton {
                prior_variance,
                forgetting,
            } => {
                positive(prior_variance, "optimizer.prior_variance")?;
                check(
                    forgetting.is_finite() && forgetting > 0.0 && forgetting <= 1.0,
                    "optimizer.forgetting",
                    "in (0, 1]",
                    forgetting,
                )
            }
            OptimizerParams::Normalized {
                learning_rate,
                power_t,
                ..
            } => {
                positive(learning_rate, "optimizer.learning_rate")?;
                exponent(power_t, "optimizer.power_t")
            }
        }
    }

    /// True when the optimiser works from a gradient alone (mini-batch capable).
    pub fn is_gradient_based(&self) -> bool {
        !matches!(
            self,
            OptimizerParams::Normalized { .. } | OptimizerParams::Newton { .. }
        )
    }

    /// Fresh state for `n` weights (the intercept is one more, stored last).
    pub(crate) fn new_state(&self, n: usize) -> OptimizerState {
        let n1 = n + 1;
        match self {
            OptimizerParams::Sgd { .. } => OptimizerState::Sgd { t: 0 },
            OptimizerParams::Adagrad { .. } => OptimizerState::Adagrad { g2: vec![0.0; n1] },
            OptimizerParams::Adam { .. } => OptimizerState::Adam {
                m: vec![0.0; n1],
                v: vec![0.0; n1],
                t: 0,
            },
            OptimizerParams::Ftrl { .. } => OptimizerState::Ftrl {
                z: vec![0.0; n1],
                n: vec![0.0; n1],
            },
            OptimizerParams::Newton { prior_variance, .. } => {
                let mut cov = vec![0.0; n1 * n1];
                for i in 0..n1 {
                    cov[i * n1 + i] = *prior_variance;
                }
                OptimizerState::Newton { cov }
            }
            OptimizerParams::Normalized { .. } => {
                let mut s = vec![0.0; n1];
                s[n] = 1.0;
                OptimizerState::Normalized {
                    s,
                    g2: vec![0.0; n1],
                    t: 0.0,
                    sum_norm: 0.0,
                }
            }
        }
    }
}

/// The learned state of an optimiser; index `n` (last) is the intercept's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerState {
    /// SGD: the number of steps taken.
    Sgd {
        /// Steps taken.
        t: u64,
    },
    /// AdaGrad: sums of squared gradients.
    Adagrad {
        /// Per-weight sum of squared gradients.
        g2: Vec<f64>,
    },
    /// Adam: moments and step count.
    Adam {
        /// First moments.
        m: Vec<f64>,
        /// Second moments.
        v: Vec<f64>,
        /// Steps taken.
        t: u64,
    },
    /// FTRL-Proximal accumulators.
    Ftrl {
        /// Per-weight `z`.
        z: Vec<f64>,
        /// Per-weight sum of squared gradients.
        n: Vec<f64>,
    },
    /// Online Newton: the inverse curvature, row-major (n+1)².
    Newton {
        /// Covariance of the weights.
        cov: Vec<f64>,
    },
    /// Normalised learning.
    Normalized {
        /// Largest magnitude seen per feature.
        s: Vec<f64>,
        /// Per-weight sum of squared gradients (adaptive only).
        g2: Vec<f64>,
        /// Updates taken.
        t: f64,
        /// Sum over updates of the normalised squared norm of the row.
        sum_norm: f64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        OptimizerParams::default()
            .validate()
            .expect("valid default");
        let parsed: OptimizerParams =
            serde_json::from_str(r#"{"kind":"adam"}"#).expect("parses with defaults");
        parsed.validate().expect("valid");
    }

    #[test]
    fn errors_name_the_parameter_and_range() {
        let bad = OptimizerParams::Adam {
            learning_rate: 0.1,
            beta1: 1.5,
            beta2: 0.999,
            epsilon: 1e-8,
        };
        let msg = bad.validate().expect_err("beta1 out of range").to_string();
        assert_eq!(msg, "`optimizer.beta1` should be in [0, 1), but is 1.5");
        let bad = OptimizerParams::Sgd {
            learning_rate: -1.0,
            power_t: 0.25,
        };
        assert!(bad
            .validate()
            .expect_err("negative")
            .to_string()
            .contains("optimizer.learning_rate"));
    }
}
