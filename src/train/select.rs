//! (being written)

/// Arguments (being written).
#[derive(clap::Args, Debug)]
pub struct SelectArgs {}

pub fn run(_args: &SelectArgs) -> crate::Result<()> {
    Err(crate::Error::Other("not built yet".into()))
}
