//! A stack of linear layers with fused bias + activation, its hand-written backward pass and
//! the host-side form of its weights.

use rand::Rng;
use serde::{Deserialize, Serialize};
use tensor_kernels::{Activation, Backend, GemmShape, LinearShape, TrainingOps, Transpose};

use crate::{Param, VaeError};

/// Host copy of one linear layer y = W a + b, W stored out × in (PyTorch's layout).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerWeights {
    /// Input width.
    pub in_dim: usize,
    /// Output width.
    pub out_dim: usize,
    /// out_dim × in_dim values, row-major.
    pub weight: Vec<f32>,
    /// out_dim values.
    pub bias: Vec<f32>,
}

impl LayerWeights {
    /// PyTorch's `nn.Linear` initialisation: W, b ~ U(−1/√in, 1/√in).
    pub fn init(in_dim: usize, out_dim: usize, rng: &mut impl Rng) -> Self {
        let bound = 1.0 / (in_dim as f32).sqrt();
        LayerWeights {
            in_dim,
            out_dim,
            weight: (0..in_dim * out_dim).map(|_| rng.gen_range(-bound..bound)).collect(),
            bias: (0..out_dim).map(|_| rng.gen_range(-bound..bound)).collect(),
        }
    }

    /// Checks that the stored values match the declared and the expected shape.
    pub fn check(&self, what: &str, dims: (usize, usize)) -> Result<(), VaeError> {
        if (self.in_dim, self.out_dim) != dims {
            return Err(VaeError::ShapeMismatch(format!(
                "{what} is {}→{}, the architecture says {}→{}",
                self.in_dim, self.out_dim, dims.0, dims.1
            )));
        }
        if self.weight.len() != self.in_dim * self.out_dim || self.bias.len() != self.out_dim {
            return Err(VaeError::ShapeMismatch(format!(
                "{what} declares {}→{} but holds {} weights and {} biases",
                self.in_dim,
                self.out_dim,
                self.weight.len(),
                self.bias.len()
            )));
        }
        if !self.weight.iter().chain(&self.bias).all(|v| v.is_finite()) {
            return Err(VaeError::ShapeMismatch(format!("{what} holds non-finite values")));
        }
        Ok(())
    }
}

struct Linear<B: Backend> {
    in_dim: usize,
    out_dim: usize,
    weight: B::Buffer,
    bias: B::Buffer,
    grad_weight: B::Buffer,
    grad_bias: B::Buffer,
}

impl<B: Backend> Linear<B> {
    /// This layer on a batch of `rows`.
    fn shape(&self, rows: usize) -> LinearShape {
        LinearShape { rows, in_dim: self.in_dim, out_dim: self.out_dim }
    }

    /// ∂W ← δᵀ a + β·∂W from a pre-activation gradient δ (rows × out) and an input a (rows × in).
    fn weight_grad(&mut self, b: &B, delta: &B::Buffer, a: &B::Buffer, rows: usize, beta: f32) {
        b.gemm(
            GemmShape::new(self.out_dim, self.in_dim, rows).transposed(Transpose::Yes, Transpose::No),
            delta,
            a,
            &mut self.grad_weight,
            1.0,
            beta,
        );
    }

    /// ∂W and ∂b = Σ_rows δ, overwritten (`accumulate` false) or added to.
    fn write_grads(&mut self, b: &B, delta: &B::Buffer, a: &B::Buffer, rows: usize, accumulate: bool) {
        let beta = if accumulate { 1.0 } else { 0.0 };
        self.weight_grad(b, delta, a, rows, beta);
        b.column_sums(delta, rows, self.out_dim, &mut self.grad_bias, 1.0, beta);
    }
}

/// An MLP on backend `B` with per-layer activations and a workspace sized for `capacity` rows.
pub struct Mlp<B: Backend> {
    backend: B,
    layers: Vec<Linear<B>>,
    acts: Vec<Activation>,
    /// Post-activation output of each layer.
    outputs: Vec<B::Buffer>,
    /// Gradient with respect to each layer's output (then, in place, its pre-activation).
    deltas: Vec<B::Buffer>,
    capacity: usize,
}

impl<B: Backend> Mlp<B> {
    /// Builds an MLP from host weights; `acts[l]` follows layer l.
    pub fn from_weights(backend: &B, weights: &[LayerWeights], acts: Vec<Activation>) -> Self {
        assert_eq!(weights.len(), acts.len(), "one activation per layer");
        let layers = weights
            .iter()
            .map(|w| Linear {
                in_dim: w.in_dim,
                out_dim: w.out_dim,
                weight: backend.upload(&w.weight),
                bias: backend.upload(&w.bias),
                grad_weight: backend.zeros(w.weight.len()),
                grad_bias: backend.zeros(w.bias.len()),
            })
            .collect();
        Mlp { backend: backend.clone(), layers, acts, outputs: Vec::new(), deltas: Vec::new(), capacity: 0 }
    }

    /// Host copy of the weights.
    pub fn weights(&self) -> Vec<LayerWeights> {
        self.layers
            .iter()
            .map(|l| LayerWeights {
                in_dim: l.in_dim,
                out_dim: l.out_dim,
                weight: self.backend.download(&l.weight),
                bias: self.backend.download(&l.bias),
            })
            .collect()
    }

    /// Overwrites the weights (shapes must already match).
    pub fn set_weights(&mut self, weights: &[LayerWeights]) {
        for (l, w) in self.layers.iter_mut().zip(weights) {
            self.backend.write(&mut l.weight, &w.weight);
            self.backend.write(&mut l.bias, &w.bias);
        }
    }

    fn ensure_capacity(&mut self, rows: usize) {
        if rows <= self.capacity {
            return;
        }
        let b = &self.backend;
        self.outputs = self.layers.iter().map(|l| b.zeros(rows * l.out_dim)).collect();
        self.deltas = self.layers.iter().map(|l| b.zeros(rows * l.out_dim)).collect();
        self.capacity = rows;
    }

    /// Forward pass of `rows` rows of `input`; the result is in [`Mlp::output`].
    pub fn forward(&mut self, input: &B::Buffer, rows: usize) {
        self.ensure_capacity(rows);
        for l in 0..self.layers.len() {
            let (before, after) = self.outputs.split_at_mut(l);
            let a = if l == 0 { input } else { &before[l - 1] };
            let layer = &self.layers[l];
            let out = &mut after[0];
            self.backend.linear(a, &layer.weight, &layer.bias, out, layer.shape(rows), self.acts[l]);
        }
    }

    /// Output of the last forward pass.
    pub fn output(&self) -> &B::Buffer {
        self.outputs.last().expect("forward was called")
    }

    /// Output of the last forward pass and the buffer for the loss gradient with respect to it.
    pub fn output_and_grad(&mut self) -> (&B::Buffer, &mut B::Buffer) {
        (self.outputs.last().expect("forward was called"), self.deltas.last_mut().expect("forward was called"))
    }

    /// Backward pass after [`Mlp::forward`] on the same `input`, with the gradient with respect to
    /// the output already in place ([`Mlp::output_and_grad`]). Writes the parameter gradients when
    /// `param_grads` (overwriting them), and the gradient with respect to the input into
    /// `input_grad` when given.
    pub fn backward(
        &mut self,
        input: &B::Buffer,
        rows: usize,
        param_grads: bool,
        mut input_grad: Option<&mut B::Buffer>,
    ) {
        let b = &self.backend;
        let n = self.layers.len();
        for l in (0..n).rev() {
            let layer = &mut self.layers[l];
            let (d_before, d_after) = self.deltas.split_at_mut(l);
            let delta = &mut d_after[0];
            b.activation_backward(delta, &self.outputs[l], rows * layer.out_dim, self.acts[l]);
            let a = if l == 0 { input } else { &self.outputs[l - 1] };
            if param_grads {
                layer.write_grads(b, delta, a, rows, false);
            }
            // ∂a = δ W, into the previous layer's delta or the caller's input gradient.
            let target = if l > 0 { Some(&mut d_before[l - 1]) } else { input_grad.as_deref_mut() };
            if let Some(target) = target {
                b.gemm(GemmShape::new(rows, layer.in_dim, layer.out_dim), delta, &layer.weight, target, 1.0, 0.0);
            }
        }
    }

    /// The gradient penalty of LCD-VAE on this MLP at `input` (rows × in, host memory):
    /// gᵢ = ∂(Σⱼ wⱼ fⱼ(xᵢ))/∂xᵢ with output weights `output_seed` (rows × out), and
    /// P = mean_i (√(‖gᵢ‖² + 1e-7) − 1)². Adds λ·∂P/∂θ to the parameter gradients and returns P.
    ///
    /// For y = s(o), o = W_L h_(L−1) + b_L, hₗ = relu(Wₗ h_(l−1) + bₗ), the input gradient is
    /// g = W₁ᵀD₁ ⋯ W_Lᵀ s′(o) with Dₗ the (a.e. constant) ReLU masks. Its parameter gradient is the
    /// reverse of that chain — each Wₗ gets uₗ ⊗ v̄ₗ, with uₗ the chain's value at layer l and v̄ₗ
    /// the adjoint entering it — plus the s″ term: ō = (W_L v̄) ⊙ s″(o) sent back through the
    /// forward pass like an ordinary output gradient.
    pub fn gradient_penalty(&mut self, input: &[f32], rows: usize, output_seed: &[f32], lambda: f32) -> f64 {
        let b = self.backend.clone();
        let n = self.layers.len();
        let in_dim = self.layers[0].in_dim;
        let x = b.upload(input);
        // Forward, then the chain for g with `output_seed` as the output gradient.
        self.forward(&x, rows);
        let mut g = b.zeros(rows * in_dim);
        b.write(self.output_and_grad().1, output_seed);
        self.backward(&x, rows, false, Some(&mut g));
        // ∂P/∂gᵢ = (2/n)(‖gᵢ‖ₑ − 1) gᵢ/‖gᵢ‖ₑ with ‖g‖ₑ = √(‖g‖² + 1e-7); λ folded in.
        let mut g_host = vec![0.0f32; rows * in_dim];
        b.read(&g, &mut g_host);
        let mut penalty = 0.0f64;
        let mut adjoint = vec![0.0f32; rows * in_dim];
        for (gi, ai) in g_host.chunks(in_dim).zip(adjoint.chunks_mut(in_dim)) {
            let norm = (gi.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() + 1e-7).sqrt();
            penalty += (norm - 1.0) * (norm - 1.0);
            let scale = f64::from(lambda) * 2.0 * (norm - 1.0) / (norm * rows as f64);
            ai.iter_mut().zip(gi).for_each(|(a, &v)| *a = (scale * f64::from(v)) as f32);
        }
        // Reverse of the chain, layer 0 upwards: W̄ₗ += uₗᵀ aₗ, then aₗ₊₁ = mask(aₗ Wₗᵀ).
        let mut a = b.upload(&adjoint);
        for l in 0..n {
            let layer = &mut self.layers[l];
            layer.weight_grad(&b, &self.deltas[l], &a, rows, 1.0);
            let mut next = b.zeros(rows * layer.out_dim);
            b.gemm(
                GemmShape::new(rows, layer.out_dim, layer.in_dim).transposed(Transpose::No, Transpose::Yes),
                &a,
                &layer.weight,
                &mut next,
                1.0,
                0.0,
            );
            if l + 1 < n {
                b.activation_backward(&mut next, &self.outputs[l], rows * layer.out_dim, self.acts[l]);
            } else {
                b.activation_curvature(&mut next, &self.outputs[l], rows * layer.out_dim, self.acts[l]);
            }
            a = next;
        }
        // ō through the forward pass: the last delta is ō, already a pre-activation gradient.
        let last = n - 1;
        b.copy(&a, &mut self.deltas[last], rows * self.layers[last].out_dim);
        for l in (0..n).rev() {
            if l < last {
                b.activation_backward(
                    &mut self.deltas[l],
                    &self.outputs[l],
                    rows * self.layers[l].out_dim,
                    self.acts[l],
                );
            }
            let prev = if l == 0 { &x } else { &self.outputs[l - 1] };
            let layer = &mut self.layers[l];
            layer.write_grads(&b, &self.deltas[l], prev, rows, true);
            if l > 0 {
                let (before, after) = self.deltas.split_at_mut(l);
                b.gemm(
                    GemmShape::new(rows, layer.in_dim, layer.out_dim),
                    &after[0],
                    &layer.weight,
                    &mut before[l - 1],
                    1.0,
                    0.0,
                );
            }
        }
        penalty / rows as f64
    }

    /// Every weight and bias with its gradient, layer by layer, weight before bias.
    pub fn params(&mut self) -> impl Iterator<Item = Param<'_, B>> {
        self.layers.iter_mut().flat_map(|l| {
            let Linear { in_dim, out_dim, weight, bias, grad_weight, grad_bias } = l;
            [
                Param { value: weight, grad: grad_weight, len: *in_dim * *out_dim },
                Param { value: bias, grad: grad_bias, len: *out_dim },
            ]
        })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }
}

impl<B: TrainingOps> Mlp<B> {
    /// After a backward pass without parameter gradients: adds each row's squared gradient norm
    /// over this MLP's parameters, Σ_layers ‖δᵢ‖² (‖aᵢ‖² + 1), to `acc`. The weight gradient of
    /// sample i is the rank-one δᵢ aᵢᵀ, whose Frobenius norm is ‖δᵢ‖‖aᵢ‖; the bias adds ‖δᵢ‖².
    pub fn add_per_sample_squared_norms(&self, input: &B::Buffer, rows: usize, acc: &mut B::Buffer) {
        for (l, layer) in self.layers.iter().enumerate() {
            let a = if l == 0 { input } else { &self.outputs[l - 1] };
            self.backend.add_ghost_norms(&self.deltas[l], a, layer.shape(rows), acc);
        }
    }

    /// After a backward pass without parameter gradients: writes the parameter gradients
    /// Σᵢ factors\[i\] δᵢ aᵢᵀ and Σᵢ factors\[i\] δᵢ of every layer, one fused kernel per layer.
    pub fn clipped_param_grads(&mut self, input: &B::Buffer, rows: usize, factors: &B::Buffer) {
        let b = &self.backend;
        for l in 0..self.layers.len() {
            let a = if l == 0 { input } else { &self.outputs[l - 1] };
            let layer = &mut self.layers[l];
            b.clipped_linear_grads(
                &self.deltas[l],
                a,
                layer.shape(rows),
                factors,
                &mut layer.grad_weight,
                &mut layer.grad_bias,
            );
        }
    }
}

/// Checks a stack of layers against the expected (in, out) dimensions.
pub(crate) fn check_layers(what: &str, weights: &[LayerWeights], dims: &[(usize, usize)]) -> Result<(), VaeError> {
    if weights.len() != dims.len() {
        return Err(VaeError::ShapeMismatch(format!(
            "{what} has {} layers, the architecture says {}",
            weights.len(),
            dims.len()
        )));
    }
    for (l, (w, &d)) in weights.iter().zip(dims).enumerate() {
        w.check(&format!("{what} layer {l}"), d)?;
    }
    Ok(())
}
