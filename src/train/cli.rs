//! (being written)

/// Arguments (being written).
#[derive(clap::Args, Debug)]
pub struct TrainArgs {}

pub fn run(_args: &TrainArgs) -> crate::Result<()> {
    Err(crate::Error::Other("not built yet".into()))
}
