//! The controller's client: the apiserver's clock read from every response
//! ([`crate::server_clock`]), and with leader election every write through the leader's gate
//! ([`crate::leader::WriteGate`]).

use std::sync::Arc;

use crate::leader::{GateLayer, WriteGate};
use crate::server_clock::{ClockLayer, ServerClock};

/// A client for the controller from `config`: its responses feed `clock`; with a `gate`, its
/// writes fail at once while the gate is closed.
pub fn controller_client(
    config: kube::Config,
    clock: Arc<ServerClock>,
    gate: Option<Arc<WriteGate>>,
) -> Result<kube::Client, kube::Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?.with_layer(&ClockLayer { clock });
    Ok(match gate {
        Some(gate) => builder.with_layer(&GateLayer { gate }).build(),
        None => builder.build(),
    })
}
