//! (being written)

/// Arguments (being written).
#[derive(clap::Args, Debug)]
pub struct PartitionArgs {}

pub fn run(_args: &PartitionArgs) -> crate::Result<()> {
    Err(crate::Error::Other("not built yet".into()))
}
