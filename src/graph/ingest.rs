//! (being written)

/// Arguments (being written).
#[derive(clap::Args, Debug)]
pub struct IngestArgs {}

pub fn run(_args: &IngestArgs) -> crate::Result<()> {
    Err(crate::Error::Other("not built yet".into()))
}
