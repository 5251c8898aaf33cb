//! (being written)

#[derive(clap::Args, Debug)]
pub struct EvalArgs {}

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {}

#[derive(clap::Args, Debug)]
pub struct PredictArgs {}

pub fn run_eval(_args: &EvalArgs) -> crate::Result<()> {
    Err(crate::Error::Other("not built yet".into()))
}

pub fn run_embed(_args: &EmbedArgs) -> crate::Result<()> {
    Err(crate::Error::Other("not built yet".into()))
}

pub fn run_predict(_args: &PredictArgs) -> crate::Result<()> {
    Err(crate::Error::Other("not built yet".into()))
}
