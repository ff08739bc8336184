//! The cluster a plugin command talks to: kubectl's kubeconfig, context and
//! namespace.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::Global;

/// A client for the kubeconfig and context `global` names (kubectl's
/// defaults otherwise), and the namespace commands use when none is given.
pub async fn connect(global: &Global) -> anyhow::Result<(Client, String)> {
    // The TLS stack needs a crypto provider; a second call finds one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = KubeConfigOptions {
        context: global.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &global.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None => Config::from_kubeconfig(&options).await?,
    };
    let namespace = global
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

/// An API error said as kubectl says it: `organizations.tenure.dev "acme"
/// not found`, without the wrapping.
pub fn explain(error: kube::Error) -> anyhow::Error {
    match error {
        kube::Error::Api(status) => anyhow::anyhow!("{}", status.message),
        other => other.into(),
    }
}
