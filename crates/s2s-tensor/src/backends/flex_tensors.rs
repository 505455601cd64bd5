//! burn-flex tensors handed to the `s2s_kernels` CPU kernels: the values of an `f32` tensor of
//! [`Flex`] as rows of a slice, and a kernel's result back as a tensor.
//!
//! The functions that read tensors answer `None` when the values are not `f32` (a `Flex`
//! tensor may hold other float types), so that the callers fall back on Burn's operations.

use crate::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{Bool, DType, Tensor, TensorData, TensorPrimitive};
use s2s_kernels::cells::Rows;

/// The flex tensor behind `t`, when it holds `f32`.
pub(crate) fn primitive<const D: usize>(t: &Tensor<Flex, D>) -> Option<FlexTensor> {
    match t.clone().into_primitive() {
        TensorPrimitive::Float(t) if t.dtype() == DType::F32 => Some(t),
        _ => None,
    }
}

/// A flex tensor as a tensor.
pub(crate) fn tensor<const D: usize>(t: FlexTensor) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// A kernel's `[rows, cols]` result as a tensor, without a copy.
pub(crate) fn from_vec(values: Vec<f32>, rows: usize, cols: usize) -> Tensor<Flex, 2> {
    tensor(FlexTensor::from_data(TensorData::new(values, [rows, cols])))
}

/// The flex tensors behind `ts`, each with contiguous rows (row-major, perhaps a narrowed
/// view of a wider matrix: read in place; any other layout is copied), when they hold `f32`.
pub(crate) fn row_major<const N: usize>(ts: [&Tensor<Flex, 2>; N]) -> Option<[FlexTensor; N]> {
    each(ts, |t| match row_layout(&t) {
        Some(_) => t,
        None => t.to_contiguous(),
    })
}

/// The flex tensors behind `ts`, contiguous (copied when a view), when they hold `f32`.
pub(crate) fn contiguous<const N: usize>(ts: [&Tensor<Flex, 2>; N]) -> Option<[FlexTensor; N]> {
    each(ts, |t| t.to_contiguous())
}

/// The flex tensors behind `ts`, each passed through `layout`, when all are `f32`.
fn each<const N: usize>(
    ts: [&Tensor<Flex, 2>; N],
    layout: fn(FlexTensor) -> FlexTensor,
) -> Option<[FlexTensor; N]> {
    let flex = ts.map(primitive);
    if flex.iter().any(Option::is_none) {
        return None;
    }
    Some(flex.map(|t| layout(t.expect("checked above"))))
}

/// `[rows, cols]` of a 2-D tensor.
pub(crate) fn dims(t: &FlexTensor) -> [usize; 2] {
    t.layout().shape().dims::<2>()
}

/// The rows of a tensor that [`row_major`] returned.
pub(crate) fn rows(t: &FlexTensor) -> Rows<'_> {
    let (offset, rows, cols, stride) = row_layout(t).expect("a row-major tensor");
    Rows::new(&t.storage::<f32>()[offset..], rows, cols, stride)
        .expect("the layout lies within the buffer")
}

/// `(start offset, rows, cols, row stride)` of a 2-D tensor whose rows are contiguous.
fn row_layout(t: &FlexTensor) -> Option<(usize, usize, usize, usize)> {
    let layout = t.layout();
    let (shape, strides) = (layout.shape(), layout.strides());
    if shape.num_dims() != 2 {
        return None;
    }
    let (rows, cols) = (shape[0], shape[1]);
    if cols > 1 && strides[1] != 1 {
        return None;
    }
    let stride = match rows {
        0 | 1 => cols,
        _ => usize::try_from(strides[0]).ok().filter(|&s| s >= cols)?,
    };
    Some((layout.start_offset(), rows, cols, stride))
}

/// The values of a tensor that [`contiguous`] returned.
pub(crate) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

/// The values of a boolean tensor.
pub(crate) fn bools<const D: usize>(t: &Tensor<Flex, D, Bool>) -> Option<Vec<bool>> {
    let t = t.clone().into_primitive().to_contiguous();
    let (start, end) = t.layout().contiguous_offsets()?;
    Some(
        t.storage::<u8>()[start..end]
            .iter()
            .map(|&b| b != 0)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    /// The attention kernel masks padding with the score that `ops::masked_softmax` uses, so
    /// that a row without a valid position gets the same uniform weights.
    #[test]
    fn the_kernels_mask_with_the_score_of_masked_softmax() {
        assert_eq!(s2s_kernels::attention::MASK_VALUE, crate::ops::MASK_VALUE);
    }

    /// The workspace builds burn-flex from `patches/burn-flex` (`[patch.crates-io]`), whose
    /// `FlexTensor::empty`, where every matmul output and zero tensor is made, allocates with
    /// the element's own alignment. Unpatched, it fills a buffer of alignment 1 and copies it
    /// into a second, 16-aligned one, which leaves alignment 16 on the storage.
    #[test]
    fn matmul_outputs_are_made_without_an_aligning_copy() {
        use crate::backend::Flex;
        use burn::tensor::Tensor;
        let device = Default::default();
        let a = Tensor::<Flex, 2>::ones([3, 4], &device);
        let b = Tensor::<Flex, 2>::ones([4, 5], &device);
        let product = a.matmul(b).into_data();
        assert_eq!(product.to_vec::<f32>().unwrap(), vec![4.0; 15]);
        assert_eq!(
            product.bytes.align(),
            4,
            "burn-flex is not the patched copy"
        );
    }

    /// The other change in `patches/burn-flex`: `slice_assign` into a tensor that nothing
    /// else holds (a slice's gradient is one, written into fresh zeros) writes in place.
    /// Unpatched, it copied the destination first.
    #[test]
    fn slice_assign_into_an_unshared_tensor_writes_in_place() {
        use crate::backend::Flex;
        use burn::tensor::{Tensor, TensorPrimitive};
        let device = Default::default();
        let address = |t: &Tensor<Flex, 2>| match t.clone().into_primitive() {
            TensorPrimitive::Float(t) => t.bytes().as_ptr() as usize,
            TensorPrimitive::QFloat(_) => unreachable!("a float tensor"),
        };
        let zeros = Tensor::<Flex, 2>::zeros([4, 6], &device);
        let before = address(&zeros);
        let written = zeros.slice_assign([1..3, 2..5], Tensor::ones([2, 3], &device));
        assert_eq!(address(&written), before, "the destination was copied");
        let values = written.into_data().to_vec::<f32>().unwrap();
        let expected: Vec<f32> = (0..24)
            .map(|i| {
                f32::from(u8::from(
                    (1..3).contains(&(i / 6)) && (2..5).contains(&(i % 6)),
                ))
            })
            .collect();
        assert_eq!(values, expected);
    }
}
