//! (being written)

/// Arguments (being written).
#[derive(clap::Args, Debug)]
pub struct PlotArgs {}

pub fn run(_args: &PlotArgs) -> crate::Result<()> {
    Err(crate::Error::Other("not built yet".into()))
}
