//! (being written)

/// Arguments (being written).
#[derive(clap::Args, Debug)]
pub struct InspectArgs {}

pub fn run(_args: &InspectArgs) -> crate::Result<()> {
    Err(crate::Error::Other("not built yet".into()))
}
