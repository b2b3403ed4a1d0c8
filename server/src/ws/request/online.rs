//! Online-only sends (typing, presence): device sets checked as for stored sends (the
//! sender's own devices need not be listed), delivered to connected devices with `seq = 0`,
//! never stored, never a push wake-up (only the writer and roster changes hand devices to the
//! pusher). They take tokens of their own budget (`--online-only-burst`,
//! `--online-only-per-second`), not of the send rate; past it a send is refused
//! `RATE_LIMITED` like any other (online-only is best effort: clients drop it).

use hush_wire::frames::{SendOk, send_response};

use super::{Answer, Ctx, internal, refuse, rejection_error};
use crate::hub::Push;
use crate::store::{DeviceKey, RecipientBatch, StoredEnvelope};

/// Applies an online-only send: the online-only budget, device check, then delivery to
/// whoever is connected.
pub fn apply(ctx: Ctx<'_>, recipients: Vec<RecipientBatch>) -> Answer {
    use send_response::Result as R;
    if let Err(e) = ctx.check_online_rate() {
        return refuse(e);
    }
    let state = ctx.state.clone();
    let sender = ctx.device;
    let (server_ts, _) = ctx.times();
    Box::pin(async move {
        match state.store.check_devices(sender, &recipients).await {
            Ok(Ok(_)) => {
                for r in recipients {
                    for msg in r.messages {
                        let device = DeviceKey { account: r.account, device_id: msg.device_id };
                        let env =
                            StoredEnvelope { seq: 0, server_ts, kind: msg.kind, content: msg.content, group: None };
                        if !state.hub.deliver(device, Push::Ephemeral(Box::new(env.clone())))
                            && let Some(cluster) = &state.cluster
                        {
                            cluster.ephemeral_elsewhere(device, env);
                        }
                    }
                }
                R::Ok(SendOk { server_timestamp: server_ts, group_seq: 0 })
            }
            Ok(Err(rejection)) => R::Error(rejection_error(rejection)),
            Err(e) => {
                tracing::error!(error = %e, "checking devices failed");
                R::Error(internal())
            }
        }
    })
}
