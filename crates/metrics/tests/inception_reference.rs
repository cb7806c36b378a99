//! Inception v3 against the reference activations in ../shared/fixtures (computed with the
//! reference implementation of the FID graph): every stored activation and the final features
//! within relative L2 error 1e-4. Skipped, with the reason printed, when ../shared is absent.

use std::path::{Path, PathBuf};

use metrics::{Inception, FEATURE_DIM, INCEPTION_FILE, INPUT_SIZE};
use safetensors::SafeTensors;
use tensor_kernels::{Backend, Cpu, ImageShape};

fn shared() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let ok = dir.join("models").join(INCEPTION_FILE).is_file()
        && dir.join("fixtures/inception_reference.safetensors").is_file();
    if !ok {
        println!("skipped: {} has no Inception weights and reference fixture", dir.display());
    }
    ok.then_some(dir)
}

fn f32s(file: &SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = file.tensor(name).unwrap();
    (t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(), t.shape().to_vec())
}

/// ‖a − b‖ / ‖b‖ in f64.
fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (diff / norm).sqrt()
}

/// The first image of an NHWC batch, as CHW.
fn first_as_chw(nhwc: &[f32], s: ImageShape) -> Vec<f32> {
    let mut out = vec![0.0; s.h * s.w * s.c];
    for y in 0..s.h {
        for x in 0..s.w {
            for c in 0..s.c {
                out[(c * s.h + y) * s.w + x] = nhwc[(y * s.w + x) * s.c + c];
            }
        }
    }
    out
}

#[test]
fn activations_and_features_match_the_reference() {
    let Some(dir) = shared() else { return };
    let bytes = std::fs::read(dir.join("fixtures/inception_reference.safetensors")).unwrap();
    let fixture = SafeTensors::deserialize(&bytes).unwrap();
    let images = fixture.tensor("images_u8").unwrap().data().to_vec();
    let n = images.len() / (28 * 28);
    assert_eq!(n, 8);

    let cpu = Cpu::new();
    let model = Inception::load(&cpu, &dir.join("models").join(INCEPTION_FILE)).unwrap();
    let unit: Vec<f32> = images.iter().map(|&v| f32::from(v) / 255.0).collect();
    let input = model.preprocess(&unit, ImageShape { n, h: 28, w: 28, c: 1 }).unwrap();

    // Preprocessing: the first two images, NCHW in the fixture.
    let (want_input, shape) = f32s(&fixture, "input_299");
    assert_eq!(shape, vec![2, 3, INPUT_SIZE, INPUT_SIZE]);
    let host = cpu.download(&input);
    let one = ImageShape { n: 1, h: INPUT_SIZE, w: INPUT_SIZE, c: 3 };
    for i in 0..2 {
        let got = first_as_chw(&host[i * one.len()..], one);
        let err = relative_l2(&got, &want_input[i * one.len()..(i + 1) * one.len()]);
        assert!(err < 1e-6, "input_299[{i}]: relative L2 error {err}");
    }

    let mut checked = Vec::new();
    let features = model.forward(&input, n, &mut |name, s, buf| {
        let key = match name {
            "conv" => "conv_out",
            "pool1" => "pool1_out",
            "mixed_2" => "mixed_2_out",
            "mixed_3" => "mixed_3_out",
            "mixed_7" => "mixed_7_out",
            "mixed_8" => "mixed_8_out",
            _ => return,
        };
        let (want, shape) = f32s(&fixture, key);
        assert_eq!(shape, vec![1, s.c, s.h, s.w], "{key} shape");
        let got = first_as_chw(&cpu.download(buf), s);
        let err = relative_l2(&got, &want);
        println!("{key}: relative L2 error {err:.2e}");
        assert!(err < 1e-4, "{key}: relative L2 error {err}");
        checked.push(key);
    });
    assert_eq!(checked.len(), 6, "taps seen: {checked:?}");
    let (want, shape) = f32s(&fixture, "features");
    assert_eq!(shape, vec![n, FEATURE_DIM]);
    let got = cpu.download(&features);
    for i in 0..n {
        let err =
            relative_l2(&got[i * FEATURE_DIM..(i + 1) * FEATURE_DIM], &want[i * FEATURE_DIM..(i + 1) * FEATURE_DIM]);
        println!("features[{i}]: relative L2 error {err:.2e}");
        assert!(err < 1e-4, "features[{i}]: relative L2 error {err}");
    }
}

/// Weights holding a NaN are refused on every load: by their digest through `load`, and by the
/// finiteness check through `from_bytes` (which gave FID 0.0 for MNIST against Fashion-MNIST
/// before the check).
#[test]
fn weights_holding_nan_are_refused() {
    let Some(dir) = shared() else { return };
    let path = dir.join("models").join(INCEPTION_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let offset = {
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let t = file.tensor("mixed_9.tower_mixed_conv_1.weight").unwrap();
        t.data().as_ptr() as usize - bytes.as_ptr() as usize
    };
    bytes[offset..offset + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let damaged = std::env::temp_dir().join(format!("align-fl-nan-weights-{}.safetensors", std::process::id()));
    std::fs::write(&damaged, &bytes).unwrap();
    let cpu = Cpu::new();
    let e = Inception::load(&cpu, &damaged).err().expect("refused by the digest").to_string();
    assert!(e.contains("sha256") && e.contains("replace it"), "{e}");
    let e = Inception::from_bytes(&cpu, &bytes, &damaged).err().expect("refused as non-finite").to_string();
    assert!(e.contains("mixed_9.tower_mixed_conv_1.weight holds NaN"), "{e}");
    std::fs::remove_file(&damaged).unwrap();
}
