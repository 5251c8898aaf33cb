//! The `shardsage` command line: parses arguments and hands each subcommand to the library.

use clap::{CommandFactory, FromArgMatches, Subcommand};

/// MPI-native training of graph neural networks on HDF5 graph shards.
///
/// The usual path: `generate` (or `ingest` a real graph) -> `partition` -> `train` (under
/// `mpirun` for several ranks) -> `eval` / `embed` / `predict`. `inspect` summarises any file.
#[derive(clap::Parser)]
#[command(name = "shardsage", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a synthetic citation graph (raw files, or a dataset file with --out).
    Generate(shardsage::graph::generate::GenerateArgs),
    /// Read a raw graph (edge list, OGB raw directory, .npy arrays) into one dataset file.
    Ingest(shardsage::graph::ingest::IngestArgs),
    /// Split a dataset into P part files with contiguous node-id ranges, plus manifest.json.
    Partition(shardsage::graph::partition::PartitionArgs),
    /// Summarise a dataset, a part, a directory of parts or a checkpoint.
    Inspect(shardsage::inspect::InspectArgs),
    /// Train GraphSAGE (link prediction or node classification); run under mpirun for W ranks.
    Train(shardsage::train::cli::TrainArgs),
    /// Evaluate a checkpoint on the validation or test split.
    Eval(shardsage::eval::cli::EvalArgs),
    /// Write the embeddings of every node to an HDF5 file.
    Embed(shardsage::eval::cli::EmbedArgs),
    /// List the most likely missing citations of a paper, by original id.
    Predict(shardsage::eval::cli::PredictArgs),
    /// Render the loss and metric curves of a run directory to an SVG image.
    Plot(shardsage::train::plot::PlotArgs),
    /// Rank run directories by their best validation metric and name the best checkpoint.
    Select(shardsage::train::select::SelectArgs),
    /// Random walks from every node (DeepWalk; node2vec with --p / --q) into an HDF5 file.
    Walk(shardsage::walk::cli::WalkArgs),
    /// Node embeddings from random walks (DeepWalk / node2vec walks, skip-gram training).
    Node2vec(shardsage::walk::cli::Node2vecArgs),
    /// Serve top-k citation predictions over HTTP (KServe V1 and V2 protocols).
    Serve(shardsage::serve::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    shardsage::runtime::retain_freed_memory();
    shardsage::graph::store::init_hdf5();
    shardsage::runtime::init_logging();
    // The matches as well as the parsed arguments: `train` tells the flags given on the command
    // line from the defaults (the config file sits between them).
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sub = |name: &str| {
        matches
            .subcommand_matches(name)
            .cloned()
            .unwrap_or_default()
    };
    match cli.command {
        Command::Generate(a) => shardsage::graph::generate::run(&a)?,
        Command::Ingest(a) => shardsage::graph::ingest::run(&a)?,
        Command::Partition(a) => shardsage::graph::partition::run(&a)?,
        Command::Inspect(a) => shardsage::inspect::run(&a)?,
        Command::Train(a) => shardsage::train::cli::run(&a, &sub("train"))?,
        Command::Eval(a) => shardsage::eval::cli::run_eval(&a)?,
        Command::Embed(a) => shardsage::eval::cli::run_embed(&a)?,
        Command::Predict(a) => shardsage::eval::cli::run_predict(&a)?,
        Command::Plot(a) => shardsage::train::plot::run(&a)?,
        Command::Select(a) => shardsage::train::select::run(&a)?,
        Command::Walk(a) => shardsage::walk::cli::run(&a)?,
        Command::Node2vec(a) => shardsage::walk::cli::run_node2vec(&a)?,
        Command::Serve(a) => shardsage::serve::run(&a)?,
    }
    Ok(())
}
