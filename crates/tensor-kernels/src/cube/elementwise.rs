//! Element-wise kernels and their launchers: bias + activation and its first and second
//! derivatives, column sums, axpy, fill, copy, and Adam with DP-SGD's noise fused in.

use cubecl::prelude::*;

use super::{activation_code, elementwise_grid, u32_of, Cube, CubeBuffer};
use crate::{Activation, AdamStep, GradientNoise};

/// `act(v)` for the activation code of [`super::activation_code`] (0 identity, 1 ReLU, 2 sigmoid).
#[cube]
pub(super) fn activate<F: Float>(v: F, #[comptime] act: u32) -> F {
    let mut out = v;
    if act == 1 {
        out = v.max(F::new(0.0));
    }
    if act == 2 {
        out = F::new(1.0) / (F::new(1.0) + F::exp(-v));
    }
    out
}

/// x[i, j] ← act(x[i, j] + bias[j]) over the first `len` values of a matrix with `cols` columns.
#[cube(launch_unchecked)]
pub(super) fn bias_activation<F: Float + CubeElement>(
    x: &mut Array<F>,
    bias: &Array<F>,
    len: u32,
    cols: u32,
    #[comptime] act: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let v = x[i as usize] + bias[(i % cols) as usize];
        x[i as usize] = activate::<F>(v, act);
    }
}

/// grad ← grad ⊙ act′, with act′ written through the activation's output y.
#[cube(launch_unchecked)]
#[allow(clippy::collapsible_if)] // The outer test is resolved when the kernel is expanded.
pub(super) fn activation_backward<F: Float + CubeElement>(
    grad: &mut Array<F>,
    y: &Array<F>,
    len: u32,
    #[comptime] act: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let yi = y[i as usize];
        if act == 1 {
            if yi <= F::new(0.0) {
                grad[i as usize] = F::new(0.0);
            }
        }
        if act == 2 {
            grad[i as usize] = grad[i as usize] * yi * (F::new(1.0) - yi);
        }
    }
}

/// grad ← grad ⊙ act″ through the output y (the sigmoid's y(1 − y)(1 − 2y); zero for identity
/// and ReLU).
#[cube(launch_unchecked)]
pub(super) fn activation_curvature<F: Float + CubeElement>(
    grad: &mut Array<F>,
    y: &Array<F>,
    len: u32,
    #[comptime] act: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let yi = y[i as usize];
        let mut factor = F::new(0.0);
        if act == 2 {
            factor = yi * (F::new(1.0) - yi) * (F::new(1.0) - F::new(2.0) * yi);
        }
        grad[i as usize] = grad[i as usize] * factor;
    }
}

/// out[j] = α·Σᵢ x[i, j] + β·out[j] (β = 0: out not read); one unit per column.
#[cube(launch_unchecked)]
pub(super) fn column_sums<F: Float + CubeElement>(
    x: &Array<F>,
    out: &mut Array<F>,
    rows: u32,
    cols: u32,
    alpha: F,
    beta: F,
) {
    let j = ABSOLUTE_POS as u32;
    if j < cols {
        let mut acc = F::new(0.0);
        for i in 0..rows {
            acc += x[(i * cols + j) as usize];
        }
        if beta == F::new(0.0) {
            out[j as usize] = alpha * acc;
        } else {
            out[j as usize] = alpha * acc + beta * out[j as usize];
        }
    }
}

/// y ← y + α·x over the first `len` values.
#[cube(launch_unchecked)]
pub(super) fn axpy<F: Float + CubeElement>(alpha: F, x: &Array<F>, y: &mut Array<F>, len: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        y[i as usize] += alpha * x[i as usize];
    }
}

/// x[i] = value for i < len.
#[cube(launch_unchecked)]
pub(super) fn fill<F: Float + CubeElement>(x: &mut Array<F>, len: u32, value: F) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        x[i as usize] = value;
    }
}

/// dst[i] = src[i] for i < len.
#[cube(launch_unchecked)]
pub(super) fn copy<F: Float + CubeElement>(src: &Array<F>, dst: &mut Array<F>, len: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        dst[i as usize] = src[i as usize];
    }
}

/// out = scale·(g + std·z): the gradient DP-SGD's Adam step uses.
#[cube(launch_unchecked)]
pub(super) fn noisy_gradient<F: Float + CubeElement>(
    g: &Array<F>,
    z: &Array<F>,
    out: &mut Array<F>,
    len: u32,
    scale: F,
    std: F,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        out[i as usize] = scale * (g[i as usize] + std * z[i as usize]);
    }
}

/// One Adam update per element (Kingma & Ba 2015, PyTorch's form):
/// m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², p ← p − step·m / (√v / √bc₂ + ε).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn adam<F: Float + CubeElement>(
    p: &mut Array<F>,
    g: &Array<F>,
    m: &mut Array<F>,
    v: &mut Array<F>,
    len: u32,
    beta1: F,
    beta2: F,
    eps: F,
    step_size: F,
    bc2_sqrt: F,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let gi = g[i as usize];
        let mi = beta1 * m[i as usize] + (F::new(1.0) - beta1) * gi;
        let vi = beta2 * v[i as usize] + (F::new(1.0) - beta2) * gi * gi;
        m[i as usize] = mi;
        v[i as usize] = vi;
        p[i as usize] = p[i as usize] - step_size * mi / (F::sqrt(vi) / bc2_sqrt + eps);
    }
}

impl<R: Runtime> Cube<R> {
    /// x ← act(x + bias) row by row, as [`crate::Backend::bias_activation`].
    pub(super) fn launch_bias_activation(
        &self,
        x: &mut CubeBuffer,
        bias: &CubeBuffer,
        rows: usize,
        cols: usize,
        act: Activation,
    ) {
        let len = rows * cols;
        let (x, bias) = (self.arg("bias_activation", "x", x, len), self.arg("bias_activation", "bias", bias, cols));
        launch_1d!(self, bias_activation, len, x, bias, u32_of(len), u32_of(cols), activation_code(act));
    }

    /// grad ← grad ⊙ act′(y), as [`crate::Backend::activation_backward`].
    pub(super) fn launch_activation_backward(
        &self,
        grad: &mut CubeBuffer,
        y: &CubeBuffer,
        len: usize,
        act: Activation,
    ) {
        if act != Activation::Identity {
            let (g, y) =
                (self.arg("activation_backward", "grad", grad, len), self.arg("activation_backward", "y", y, len));
            launch_1d!(self, activation_backward, len, g, y, u32_of(len), activation_code(act));
        }
    }

    /// grad ← grad ⊙ act″(y), as [`crate::Backend::activation_curvature`].
    pub(super) fn launch_activation_curvature(
        &self,
        grad: &mut CubeBuffer,
        y: &CubeBuffer,
        len: usize,
        act: Activation,
    ) {
        let (g, y) =
            (self.arg("activation_curvature", "grad", grad, len), self.arg("activation_curvature", "y", y, len));
        launch_1d!(self, activation_curvature, len, g, y, u32_of(len), activation_code(act));
    }

    /// out = α·Σᵢ x[i, ·] + β·out, one unit per column, as [`crate::Backend::column_sums`].
    pub(super) fn launch_column_sums(
        &self,
        x: &CubeBuffer,
        rows: usize,
        cols: usize,
        out: &mut CubeBuffer,
        alpha: f32,
        beta: f32,
    ) {
        let (x, out) = (self.arg("column_sums", "x", x, rows * cols), self.arg("column_sums", "out", out, cols));
        launch_1d!(self, column_sums, cols, x, out, u32_of(rows), u32_of(cols), alpha, beta);
    }

    /// y ← y + α·x, as [`crate::Backend::axpy`].
    pub(super) fn launch_axpy(&self, alpha: f32, x: &CubeBuffer, y: &mut CubeBuffer, len: usize) {
        let (x, y) = (self.arg("axpy", "x", x, len), self.arg("axpy", "y", y, len));
        launch_1d!(self, axpy, len, alpha, x, y, u32_of(len));
    }

    /// Sets the first `len` values of `buf` to `value`.
    pub(super) fn launch_fill(&self, buf: &CubeBuffer, len: usize, value: f32) {
        let buf = self.arg("zeros", "buf", buf, len);
        launch_1d!(self, fill, len, buf, u32_of(len), value);
    }

    /// dst ← src over the first `len` values.
    pub(super) fn launch_copy(&self, src: &CubeBuffer, dst: &mut CubeBuffer, len: usize) {
        let (src, dst) = (self.arg("copy", "src", src, len), self.arg("copy", "dst", dst, len));
        launch_1d!(self, copy, len, src, dst, u32_of(len));
    }

    /// One Adam update, as [`crate::Backend::adam`]; with noise, the noised gradient
    /// scale · (grad + std · z) is formed first (z from [`Cube::launch_gaussian_noise`]).
    pub(super) fn launch_adam(
        &self,
        param: &mut CubeBuffer,
        grad: &CubeBuffer,
        moments: &mut (CubeBuffer, CubeBuffer),
        len: usize,
        step: AdamStep,
        noise: Option<GradientNoise>,
    ) {
        if len == 0 {
            return;
        }
        let (m, v) = moments;
        let noisy;
        let grad = match noise {
            None => grad,
            Some(n) => {
                let mut z = self.scratch(len);
                self.launch_gaussian_noise(&mut z, len, n.key);
                noisy = self.scratch(len);
                let (g, z, out) = (
                    self.arg("adam", "grad", grad, len),
                    self.arg("adam", "z", &z, len),
                    self.arg("adam", "out", &noisy, len),
                );
                launch_1d!(self, noisy_gradient, len, g, z, out, u32_of(len), n.scale, n.std);
                &noisy
            }
        };
        let bc1 = 1.0 - step.beta1.powi(step.t as i32);
        let bc2 = 1.0 - step.beta2.powi(step.t as i32);
        let args = (
            self.arg("adam", "param", param, len),
            self.arg("adam", "grad", grad, len),
            self.arg("adam", "m", m, len),
            self.arg("adam", "v", v, len),
        );
        let (p, g, m, v) = args;
        launch_1d!(
            self,
            adam,
            len,
            p,
            g,
            m,
            v,
            u32_of(len),
            step.beta1,
            step.beta2,
            step.eps,
            step.lr / bc1,
            bc2.sqrt()
        );
    }
}
