//! Batch baselines through smartcore: linear and logistic regression fitted
//! on a window of readings, for hindsight comparison with the online models.

use ndarray::ArrayView2;
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::linear_regression::{LinearRegression, LinearRegressionParameters};
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

use crate::error::ModelError;
use crate::loss::sigmoid;
use crate::metrics::Task;

/// A batch-fitted linear model: coefficients and intercept.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchModel {
    task: Task,
    coefficients: Vec<f64>,
    intercept: f64,
}

fn matrix(x: ArrayView2<'_, f64>) -> Result<DenseMatrix<f64>, ModelError> {
    let rows: Vec<Vec<f64>> = x
        .rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .map(|v| if v.is_nan() { 0.0 } else { *v })
                .collect()
        })
        .collect();
    DenseMatrix::from_2d_vec(&rows).map_err(|e| ModelError::Baseline(e.to_string()))
}

impl BatchModel {
    /// Fits ordinary least squares (SVD, so collinear one-hot columns are fine) to `x` and `y`. NaN features are taken as 0.
    pub fn fit_regression(x: ArrayView2<'_, f64>, y: &[f64]) -> Result<Self, ModelError> {
        let m = matrix(x)?;
        let params = LinearRegressionParameters::default()
            .with_solver(smartcore::linear::linear_regression::LinearRegressionSolverName::SVD);
        let fit = LinearRegression::fit(&m, &y.to_vec(), params)
            .map_err(|e| ModelError::Baseline(e.to_string()))?;
        let coefficients = fit.coefficients().iterator(0).copied().collect();
        Ok(BatchModel {
            task: Task::Regression,
            coefficients,
            intercept: *fit.intercept(),
        })
    }

    /// Fits an L2-regularised (`alpha`) logistic regression to 0/1 labels.
    pub fn fit_classification(
        x: ArrayView2<'_, f64>,
        y: &[f64],
        alpha: f64,
    ) -> Result<Self, ModelError> {
        let m = matrix(x)?;
        let labels: Vec<i32> = y.iter().map(|&v| i32::from(v > 0.5)).collect();
        let params = LogisticRegressionParameters::default().with_alpha(alpha);
        let fit = LogisticRegression::fit(&m, &labels, params)
            .map_err(|e| ModelError::Baseline(e.to_string()))?;
        let coefficients = fit.coefficients().iterator(0).copied().collect();
        let intercept = *fit.intercept().iterator(0).next().unwrap_or(&0.0);
        Ok(BatchModel {
            task: Task::Classification,
            coefficients,
            intercept,
        })
    }

    /// Predicts every row: a value, or the probability of class 1.
    pub fn predict(&self, x: ArrayView2<'_, f64>) -> Vec<f64> {
        x.rows()
            .into_iter()
            .map(|r| {
                let raw = self.intercept
                    + r.iter()
                        .zip(&self.coefficients)
                        .map(|(v, w)| if v.is_nan() { 0.0 } else { v * w })
                        .sum::<f64>();
                match self.task {
                    Task::Regression | Task::Multiclass => raw,
                    Task::Classification => sigmoid(raw),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use ndarray::array;

    #[test]
    fn least_squares_recovers_an_exact_line() {
        let x = array![[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.0, 2.0], [0.5, 3.0]];
        let y: Vec<f64> = x
            .rows()
            .into_iter()
            .map(|r| 2.0 * r[0] - r[1] + 3.0)
            .collect();
        let m = BatchModel::fit_regression(x.view(), &y).expect("fits");
        for (p, t) in m.predict(x.view()).iter().zip(&y) {
            assert_relative_eq!(p, t, epsilon = 1e-8);
        }
    }

    #[test]
    fn logistic_separates_two_groups() {
        let x = array![[-2.0], [-1.5], [-1.0], [-0.2], [0.3], [1.0], [1.5], [2.0]];
        let y = [0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0];
        let m = BatchModel::fit_classification(x.view(), &y, 0.1).expect("fits");
        let p = m.predict(x.view());
        assert!(p[0] < 0.3 && p[7] > 0.7, "{p:?}");
    }
}
