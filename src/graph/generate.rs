//! (being written)

/// Arguments (being written).
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {}

pub fn run(_args: &GenerateArgs) -> crate::Result<()> {
    Err(crate::Error::Other("not built yet".into()))
}
