//! The Newton step's two matrix kernels: `P z` and the rank-one update
//! `P -= k · (P z)(P z)'`, O(d²) each and most of a Newton learner's time.
//!
//! Each is compiled twice from one body: for any x86-64 processor (SSE2,
//! two doubles a register) and, chosen at run time when the processor has
//! it, for AVX2 (four a register). The arithmetic is the same operations in
//! the same order (no fused multiply-add), so both give the same bits.

use crate::scaler::dots;

/// `px = P z` for the row-major d × d matrix `p` (d = `z.len()`), each entry
/// summed exactly as `dot` sums it.
pub(crate) fn p_times(p: &[f64], z: &[f64], px: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the processor has AVX2, checked just above.
        unsafe {
            return p_times_avx2(p, z, px);
        }
    }
    p_times_body(p, z, px)
}

/// `p -= k · px px'` for the row-major d × d matrix `p` (d = `px.len()`).
pub(crate) fn rank_one_down(p: &mut [f64], px: &[f64], k: f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the processor has AVX2, checked just above.
        unsafe {
            return rank_one_down_avx2(p, px, k);
        }
    }
    rank_one_down_body(p, px, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn p_times_avx2(p: &[f64], z: &[f64], px: &mut [f64]) {
    p_times_body(p, z, px)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rank_one_down_avx2(p: &mut [f64], px: &[f64], k: f64) {
    rank_one_down_body(p, px, k)
}

#[inline(always)]
fn p_times_body(p: &[f64], z: &[f64], px: &mut [f64]) {
    let d = z.len();
    // four rows of P at a time: their sums interleave, so the processor is
    // not waiting on one row's chain of additions
    let mut quads = p.chunks_exact(4 * d);
    for (out, quad) in px.chunks_exact_mut(4).zip(&mut quads) {
        let (r0, rest) = quad.split_at(d);
        let (r1, rest) = rest.split_at(d);
        let (r2, r3) = rest.split_at(d);
        out.copy_from_slice(&dots([r0, r1, r2, r3], z));
    }
    let done = d - d % 4;
    for (out, row) in px[done..].iter_mut().zip(quads.remainder().chunks_exact(d)) {
        *out = dots([row], z)[0];
    }
}

#[inline(always)]
fn rank_one_down_body(p: &mut [f64], px: &[f64], k: f64) {
    let d = px.len();
    for (row, &pi) in p.chunks_exact_mut(d).zip(px) {
        let a = k * pi;
        for (c, pj) in row.iter_mut().zip(px) {
            *c -= a * pj;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A d × d matrix and a d-vector of assorted values, signs and sizes.
    fn matrix(d: usize) -> (Vec<f64>, Vec<f64>) {
        let p = (0..d * d)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0)
            .collect();
        let z = (0..d).map(|i| ((i * 13 % 17) as f64 - 8.0) / 3.0).collect();
        (p, z)
    }

    #[test]
    fn p_times_is_the_matrix_product_and_the_same_bits_either_way() {
        for d in [1, 2, 3, 7, 24, 31, 32] {
            let (p, z) = matrix(d);
            let mut fast = vec![0.0; d];
            p_times(&p, &z, &mut fast);
            let mut portable = vec![0.0; d];
            p_times_body(&p, &z, &mut portable);
            for i in 0..d {
                let exact: f64 = (0..d).map(|j| p[i * d + j] * z[j]).sum();
                assert!(
                    (fast[i] - exact).abs() <= 1e-9 * exact.abs().max(1.0),
                    "d {d} row {i}"
                );
                assert_eq!(fast[i].to_bits(), portable[i].to_bits(), "d {d} row {i}");
            }
        }
    }

    #[test]
    fn rank_one_down_subtracts_the_outer_product_and_the_same_bits_either_way() {
        for d in [1, 2, 5, 24, 32] {
            let (p, z) = matrix(d);
            let mut fast = p.clone();
            rank_one_down(&mut fast, &z, 0.25);
            let mut portable = p.clone();
            rank_one_down_body(&mut portable, &z, 0.25);
            for i in 0..d {
                for j in 0..d {
                    let want = p[i * d + j] - 0.25 * z[i] * z[j];
                    let got = fast[i * d + j];
                    assert!((got - want).abs() < 1e-12, "d {d} at {i},{j}");
                    assert_eq!(got.to_bits(), portable[i * d + j].to_bits());
                }
            }
        }
    }
}
