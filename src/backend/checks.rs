//! The shape contract of every backend operation, checked before any work is queued.
//!
//! Both backends call these with the lengths of their buffers, so an operation rejects the same
//! arguments with the same message on the CPU and on the GPU. What can only be found while the
//! work runs (a row index outside the table, a label outside the classes) is detected by each
//! backend its own way, on the host or through a device flag; the errors it then reports are built
//! here too. Limits of one backend alone (cuBLAS's i32 dimensions) stay with that backend.

use crate::backend::{AggLayout, DeviceBlock, Memory};
use crate::error::{Error, Result};

/// The error for two buffers whose lengths do not fit an operation.
pub(crate) fn shape_error(op: &str, what: String) -> Error {
    Error::Other(format!("backend {op}: {what}"))
}

/// Buffer `what` of `op` has exactly `want` elements.
pub(crate) fn len(op: &str, what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(shape_error(
            op,
            format!("{what} has {got} elements, expected {want}"),
        ));
    }
    Ok(())
}

/// Every buffer in `others` has the `n` elements of the operation's first buffer (checked in the
/// order given, so the first mismatch is the one reported).
pub(crate) fn same_len(op: &str, n: usize, others: &[(&str, usize)]) -> Result<()> {
    for &(what, got) in others {
        len(op, what, got, n)?;
    }
    Ok(())
}

/// The view of `need` elements at `off` lies inside buffer `what` of `len` elements.
pub(crate) fn view(op: &str, what: &str, len: usize, off: usize, need: usize) -> Result<()> {
    if off.checked_add(need).is_none_or(|end| end > len) {
        return Err(shape_error(
            op,
            format!("{what}: view of {need} elements at offset {off} exceeds its {len} elements"),
        ));
    }
    Ok(())
}

/// `copy`: both views of `len` elements lie inside their buffers.
pub(crate) fn copy(
    src_len: usize,
    src_off: usize,
    dst_len: usize,
    dst_off: usize,
    len: usize,
) -> Result<()> {
    view("copy", "src", src_len, src_off, len)?;
    view("copy", "dst", dst_len, dst_off, len)
}

/// `gemm`: `A` holds `m x k`, `B` `k x n` and `C` `m x n` elements at their offsets.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a_len: usize,
    a_off: usize,
    b_len: usize,
    b_off: usize,
    c_len: usize,
    c_off: usize,
) -> Result<()> {
    view("gemm", "A", a_len, a_off, m * k)?;
    view("gemm", "B", b_len, b_off, k * n)?;
    view("gemm", "C", c_len, c_off, m * n)
}

/// `add_row_bias`: `x` is `rows x cols`, the bias view holds `cols` elements.
pub(crate) fn add_row_bias(
    x_len: usize,
    rows: usize,
    cols: usize,
    bias_len: usize,
    bias_off: usize,
) -> Result<()> {
    len("add_row_bias", "x", x_len, rows * cols)?;
    view("add_row_bias", "bias", bias_len, bias_off, cols)
}

/// `col_sums`: `x` is `rows x cols`, the output view holds `cols` elements.
pub(crate) fn col_sums(
    x_len: usize,
    rows: usize,
    cols: usize,
    out_len: usize,
    out_off: usize,
) -> Result<()> {
    len("col_sums", "x", x_len, rows * cols)?;
    view("col_sums", "out", out_len, out_off, cols)
}

/// `axpy`: `y` has the length of `x`.
pub(crate) fn axpy(x_len: usize, y_len: usize) -> Result<()> {
    len("axpy", "y", y_len, x_len)
}

/// `mul`: `b` and `out` have the length of `a`.
pub(crate) fn mul(a_len: usize, b_len: usize, out_len: usize) -> Result<()> {
    same_len("mul", a_len, &[("b", b_len), ("out", out_len)])
}

/// `mul_bwd`: every buffer has the length of `a`.
pub(crate) fn mul_bwd(
    a_len: usize,
    b_len: usize,
    grad_out_len: usize,
    grad_a_len: usize,
    grad_b_len: usize,
) -> Result<()> {
    same_len(
        "mul_bwd",
        a_len,
        &[
            ("b", b_len),
            ("grad_out", grad_out_len),
            ("grad_a", grad_a_len),
            ("grad_b", grad_b_len),
        ],
    )
}

/// `relu_bwd`: `grad` has the length of `y`.
pub(crate) fn relu_bwd(y_len: usize, grad_len: usize) -> Result<()> {
    len("relu_bwd", "grad", grad_len, y_len)
}

/// `dropout_fwd` and `dropout_bwd`: `x` is `rows x cols`, there is an id for every row, and the
/// drop probability `p` is in `[0, 1)`.
pub(crate) fn dropout(
    x_len: usize,
    rows: usize,
    cols: usize,
    row_ids_len: usize,
    p: f32,
) -> Result<()> {
    len("dropout", "x", x_len, rows * cols)?;
    if row_ids_len < rows {
        return Err(shape_error(
            "dropout",
            format!("{row_ids_len} row ids for {rows} rows"),
        ));
    }
    if !(0.0..1.0).contains(&p) {
        return Err(Error::config("dropout", format!("{p} is not in [0, 1)")));
    }
    Ok(())
}

/// `gather_rows`: `out` holds one row of width `dim` per index. Returns the table's row count,
/// which every index must stay below.
pub(crate) fn gather_rows(
    table_len: usize,
    dim: usize,
    rows_len: usize,
    out_len: usize,
) -> Result<usize> {
    len("gather_rows", "out", out_len, rows_len * dim)?;
    Ok(table_len.checked_div(dim).unwrap_or(0))
}

/// The error of `gather_rows` for index `row` outside a table of `table_rows` rows.
pub(crate) fn row_outside_table(row: u32, table_rows: impl std::fmt::Display) -> Error {
    shape_error(
        "gather_rows",
        format!("row {row} >= table rows {table_rows}"),
    )
}

/// `scatter_rows`: `src` holds one row of width `dim` per position. Returns the output's row
/// count, which every position must stay below.
pub(crate) fn scatter_rows(
    src_len: usize,
    dim: usize,
    positions_len: usize,
    out_len: usize,
) -> Result<usize> {
    len("scatter_rows", "src", src_len, positions_len * dim)?;
    Ok(out_len.checked_div(dim).unwrap_or(0))
}

/// The error of `scatter_rows` for position `pos` outside an output of `out_rows` rows.
pub(crate) fn position_outside_output(pos: u32, out_rows: impl std::fmt::Display) -> Error {
    shape_error(
        "scatter_rows",
        format!("position {pos} >= output rows {out_rows}"),
    )
}

/// `mean_agg_fwd`: `h_src` is `num_src x dim`, `out` is `num_dst x` the layout's width.
pub(crate) fn mean_agg_fwd<B: Memory>(
    block: &DeviceBlock<B>,
    layout: AggLayout,
    dim: usize,
    h_src_len: usize,
    out_len: usize,
) -> Result<()> {
    len("mean_agg_fwd", "h_src", h_src_len, block.num_src * dim)?;
    self_rows_are_sources(block, layout)?;
    len(
        "mean_agg_fwd",
        "out",
        out_len,
        block.num_dst * layout.width(dim),
    )
}

/// `SelfAndMean` reads each destination's own row among the sources: there must be as many.
fn self_rows_are_sources<B: Memory>(block: &DeviceBlock<B>, layout: AggLayout) -> Result<()> {
    if layout == AggLayout::SelfAndMean && block.num_dst > block.num_src {
        return Err(shape_error(
            "mean_agg",
            format!(
                "{} destinations but {} sources: a destination's own row must be a source",
                block.num_dst, block.num_src
            ),
        ));
    }
    Ok(())
}

/// `mean_agg_bwd`: `grad_out` is `num_dst x` the layout's width, `grad_src` is `num_src x dim`.
pub(crate) fn mean_agg_bwd<B: Memory>(
    block: &DeviceBlock<B>,
    layout: AggLayout,
    dim: usize,
    grad_out_len: usize,
    grad_src_len: usize,
) -> Result<()> {
    len(
        "mean_agg_bwd",
        "grad_out",
        grad_out_len,
        block.num_dst * layout.width(dim),
    )?;
    self_rows_are_sources(block, layout)?;
    if !block.has_reverse {
        return Err(Error::Other(
            "mean_agg_bwd: the block was built forward only (no reverse index)".into(),
        ));
    }
    len(
        "mean_agg_bwd",
        "grad_src",
        grad_src_len,
        block.num_src * dim,
    )
}

/// `bce_with_logits`: labels and gradient have the length of the logits.
pub(crate) fn bce_with_logits(logits_len: usize, labels_len: usize, grad_len: usize) -> Result<()> {
    same_len(
        "bce_with_logits",
        logits_len,
        &[("labels", labels_len), ("grad", grad_len)],
    )
}

/// `softmax_xent`: logits and gradient are `rows x classes` (one row per label).
pub(crate) fn softmax_xent(
    rows: usize,
    classes: usize,
    logits_len: usize,
    grad_len: usize,
) -> Result<()> {
    len("softmax_xent", "logits", logits_len, rows * classes)?;
    len("softmax_xent", "grad", grad_len, rows * classes)
}

/// The error of `softmax_xent` for a label outside `0..classes`.
pub(crate) fn label_outside_classes(label: u32, classes: usize) -> Error {
    shape_error(
        "softmax_xent",
        format!("label {label} >= classes {classes}"),
    )
}

/// `adam_update`: gradients and both moments have the length of the parameters.
pub(crate) fn adam_update(
    params_len: usize,
    grads_len: usize,
    m_len: usize,
    v_len: usize,
) -> Result<()> {
    same_len(
        "adam_update",
        params_len,
        &[("grads", grads_len), ("m", m_len), ("v", v_len)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_operation_and_the_buffer() {
        let err = mul_bwd(4, 4, 4, 3, 4).unwrap_err().to_string();
        assert!(
            err.contains("backend mul_bwd: grad_a has 3 elements, expected 4"),
            "{err}"
        );
        let err = gemm(3, 3, 3, 10, 2, 10, 0, 10, 0).unwrap_err().to_string();
        assert!(
            err.contains("backend gemm: A: view of 9 elements at offset 2 exceeds its 10 elements"),
            "{err}"
        );
        let err = copy(4, usize::MAX, 4, 0, 1).unwrap_err().to_string();
        assert!(err.contains("copy: src: view of 1 elements"), "{err}");
        assert!(dropout(6, 2, 3, 2, 1.0).is_err());
        assert!(dropout(6, 2, 3, 1, 0.5).is_err());
        assert!(dropout(6, 2, 3, 2, 0.5).is_ok());
        assert_eq!(gather_rows(10, 0, 0, 0).unwrap(), 0);
        assert_eq!(scatter_rows(4, 2, 2, 10).unwrap(), 5);
    }
}
