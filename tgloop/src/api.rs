//! Decoding and answering API calls: unwraps `invokeWithLayer`,
//! `initConnection` and the other `!X` wrappers, reads each function with
//! grammers' own TL types (by constructor id), and runs it against the
//! [`World`] (and, for exported and imported authorizations, the DCs).

use grammers_tl_types::{self as tl, Cursor, Deserializable, Identifiable, Serializable};

use crate::dcs::Dcs;
use crate::world::{Paging, Right, RpcErr, RpcResult, SearchFilter, Where, World};

const INVOKE_WITH_LAYER: u32 = 0xda9b0d0d;
const INIT_CONNECTION: u32 = 0xc1cd5ea9;
const INVOKE_WITHOUT_UPDATES: u32 = 0xbf9459b7;
const INVOKE_AFTER_MSG: u32 = 0xcb9f372d;

/// What a connection learned from the wrappers around its calls.
#[derive(Default, Debug, Clone)]
pub struct ConnInfo {
    pub layer: Option<i32>,
    pub api_id: Option<i32>,
    pub initialized: bool,
    /// The DC this connection is to.
    pub dc: i32,
    /// The id of the auth key the connection uses.
    pub key_id: [u8; 8],
}

/// A call with its wrappers removed.
pub struct Call<'a> {
    pub constructor: u32,
    pub body: &'a [u8],
}

impl Call<'_> {
    pub fn name(&self) -> &'static str {
        tl::name_for_id(self.constructor)
    }
}

fn invalid() -> RpcErr {
    RpcErr::bad("INPUT_REQUEST_INVALID")
}

fn skip_string(c: &mut Cursor) -> RpcResult<()> {
    String::deserialize(c).map(drop).map_err(|_| invalid())
}

/// The number of file bytes an upload part call carries; `None` for other calls.
pub fn part_bytes(call: &Call) -> Option<usize> {
    use tl::functions as f;
    match call.constructor {
        f::upload::SaveFilePart::CONSTRUCTOR_ID => read::<f::upload::SaveFilePart>(call).ok().map(|r| r.bytes.len()),
        f::upload::SaveBigFilePart::CONSTRUCTOR_ID => {
            read::<f::upload::SaveBigFilePart>(call).ok().map(|r| r.bytes.len())
        }
        _ => None,
    }
}

/// Bytes a call moves, for a free account's transfer budget: an upload
/// part's bytes, or the bytes an `upload.getFile` asks for.
pub fn moved_bytes(call: &Call) -> Option<u64> {
    use tl::functions as f;
    match call.constructor {
        f::upload::GetFile::CONSTRUCTOR_ID => read::<f::upload::GetFile>(call).ok().map(|r| r.limit.max(0) as u64),
        _ => part_bytes(call).map(|n| n as u64),
    }
}

/// Strips the invoke wrappers, recording what they say in `info`.
pub fn unwrap<'a>(mut body: &'a [u8], info: &mut ConnInfo) -> RpcResult<Call<'a>> {
    loop {
        let constructor = crate::mtproto::constructor(body).ok_or_else(invalid)?;
        let mut c = Cursor::from_slice(&body[4..]);
        match constructor {
            INVOKE_WITH_LAYER => {
                let layer = i32::deserialize(&mut c).map_err(|_| invalid())?;
                if layer < 1 {
                    return Err(RpcErr::bad("CONNECTION_LAYER_INVALID"));
                }
                info.layer = Some(layer);
            }
            INIT_CONNECTION => {
                let flags = u32::deserialize(&mut c).map_err(|_| invalid())?;
                let api_id = i32::deserialize(&mut c).map_err(|_| invalid())?;
                for _ in 0..6 {
                    skip_string(&mut c)?;
                }
                if flags & 1 != 0 {
                    tl::enums::InputClientProxy::deserialize(&mut c).map_err(|_| invalid())?;
                }
                if flags & 2 != 0 {
                    tl::enums::Jsonvalue::deserialize(&mut c).map_err(|_| invalid())?;
                }
                if api_id == 0 {
                    return Err(RpcErr::bad("API_ID_INVALID"));
                }
                info.api_id = Some(api_id);
                info.initialized = true;
            }
            INVOKE_WITHOUT_UPDATES => {}
            INVOKE_AFTER_MSG => {
                i64::deserialize(&mut c).map_err(|_| invalid())?;
            }
            _ => return Ok(Call { constructor, body }),
        }
        let consumed = 4 + c.pos();
        body = &body[consumed..];
    }
}

fn read<T: Deserializable + Identifiable>(call: &Call) -> RpcResult<T> {
    let mut c = Cursor::from_slice(&call.body[4..]);
    T::deserialize(&mut c).map_err(|_| invalid())
}

fn ok<T: Serializable>(value: T) -> RpcResult<Vec<u8>> {
    Ok(value.to_bytes())
}

fn bool_true() -> RpcResult<Vec<u8>> {
    ok(true)
}

fn paging(offset_id: i32, offset_date: i32, add_offset: i32, limit: i32, max_id: i32, min_id: i32) -> Paging {
    Paging { offset_id, offset_date, add_offset, limit, max_id, min_id }
}

/// Runs one unwrapped call; the answer is the serialized return value.
pub fn answer(world: &mut World, dcs: &mut Dcs, call: &Call, info: &ConnInfo) -> RpcResult<Vec<u8>> {
    use tl::functions as f;
    if !info.initialized {
        return Err(RpcErr::bad("CONNECTION_NOT_INITED"));
    }
    let authorized = dcs.authorized(info.key_id, world.login.authorized);
    if !authorized && !crate::auth::allowed_unauthorized(call.name()) {
        return Err(crate::auth::unauthorized());
    }
    if world.is_bot() && crate::auth::refused_to_bots(call.name()) {
        return Err(crate::auth::bot_method_invalid());
    }
    // In the loopback account, the chat these name no chat for is Saved
    // Messages, which a bot does not have.
    let saved = |world: &World| if world.is_bot() { Err(crate::auth::bot_method_invalid()) } else { Ok(Where::Saved) };
    match call.constructor {
        f::auth::ExportAuthorization::CONSTRUCTOR_ID => {
            let r: f::auth::ExportAuthorization = read(call)?;
            ok(dcs.export(info.dc, r.dc_id, world.me.id)?)
        }
        f::auth::ImportAuthorization::CONSTRUCTOR_ID => {
            let r: f::auth::ImportAuthorization = read(call)?;
            dcs.import(info.key_id, info.dc, r.id, world.me.id, &r.bytes)?;
            ok(crate::auth::authorization(world.user()))
        }
        f::auth::SendCode::CONSTRUCTOR_ID => {
            let r: f::auth::SendCode = read(call)?;
            let phone = world.me.phone.clone();
            ok(world.login.send_code(&r.phone_number, &phone, &r.api_hash)?)
        }
        f::auth::SignIn::CONSTRUCTOR_ID => {
            let r: f::auth::SignIn = read(call)?;
            if r.phone_number.chars().filter(char::is_ascii_digit).collect::<String>() != world.me.phone {
                return Err(RpcErr::bad("PHONE_NUMBER_INVALID"));
            }
            world.login.sign_in(&r.phone_code_hash, r.phone_code.as_deref())?;
            ok(crate::auth::authorization(world.user()))
        }
        f::account::GetPassword::CONSTRUCTOR_ID => ok(world.login.get_password()),
        f::auth::CheckPassword::CONSTRUCTOR_ID => {
            let r: f::auth::CheckPassword = read(call)?;
            match r.password {
                tl::enums::InputCheckPasswordSrp::Srp(p) => world.login.check_password(p.srp_id, &p.a, &p.m1)?,
                tl::enums::InputCheckPasswordSrp::InputCheckPasswordEmpty => {
                    return Err(RpcErr::bad("PASSWORD_HASH_INVALID"))
                }
            }
            ok(crate::auth::authorization(world.user()))
        }
        f::auth::ImportBotAuthorization::CONSTRUCTOR_ID => {
            let r: f::auth::ImportBotAuthorization = read(call)?;
            if r.api_hash.is_empty() {
                return Err(RpcErr::bad("API_ID_INVALID"));
            }
            world.login.import_bot(&r.bot_auth_token)?;
            ok(crate::auth::authorization(world.user()))
        }
        f::auth::LogOut::CONSTRUCTOR_ID => {
            world.login.log_out();
            ok(tl::enums::auth::LoggedOut::Out(tl::types::auth::LoggedOut { future_auth_token: None }))
        }
        f::help::GetConfig::CONSTRUCTOR_ID => ok(config(info.dc, dcs)),
        f::updates::GetState::CONSTRUCTOR_ID => ok(world.state()),
        f::users::GetUsers::CONSTRUCTOR_ID => {
            let r: f::users::GetUsers = read(call)?;
            ok(world.get_users(&r.id))
        }
        f::contacts::ResolveUsername::CONSTRUCTOR_ID => {
            let r: f::contacts::ResolveUsername = read(call)?;
            ok(world.resolve_username(&r.username)?)
        }
        f::channels::CreateChannel::CONSTRUCTOR_ID => {
            let r: f::channels::CreateChannel = read(call)?;
            if r.megagroup || !r.broadcast {
                // The loopback server makes broadcast channels only.
                return Err(RpcErr::bad("INPUT_REQUEST_INVALID"));
            }
            let (_, updates) = world.create_channel(&r.title, None)?;
            ok(updates)
        }
        f::channels::EditAdmin::CONSTRUCTOR_ID => {
            let r: f::channels::EditAdmin = read(call)?;
            let w = world.resolve_channel(&r.channel)?;
            ok(world.edit_admin(w, &r.user_id, &r.admin_rights)?)
        }
        f::channels::GetChannels::CONSTRUCTOR_ID => {
            let r: f::channels::GetChannels = read(call)?;
            ok(world.get_channels(&r.id)?)
        }
        f::channels::GetFullChannel::CONSTRUCTOR_ID => {
            let r: f::channels::GetFullChannel = read(call)?;
            let w = world.resolve_channel(&r.channel)?;
            ok(world.full_channel(w)?)
        }
        f::upload::SaveFilePart::CONSTRUCTOR_ID => {
            let r: f::upload::SaveFilePart = read(call)?;
            world.save_part(info.dc, r.file_id, r.file_part, None, r.bytes)?;
            bool_true()
        }
        f::upload::SaveBigFilePart::CONSTRUCTOR_ID => {
            let r: f::upload::SaveBigFilePart = read(call)?;
            world.save_part(info.dc, r.file_id, r.file_part, Some(r.file_total_parts), r.bytes)?;
            bool_true()
        }
        f::messages::SendMedia::CONSTRUCTOR_ID => {
            let r: f::messages::SendMedia = read(call)?;
            let w = world.resolve_peer(&r.peer)?;
            world.require(w, Right::Post)?;
            ok(world.send_media(info.dc, w, &r.media, &r.message, r.random_id)?)
        }
        f::messages::SendMessage::CONSTRUCTOR_ID => {
            let r: f::messages::SendMessage = read(call)?;
            let w = world.resolve_peer(&r.peer)?;
            world.require(w, Right::Post)?;
            ok(world.send_message(w, &r.message, r.random_id)?)
        }
        f::messages::EditMessage::CONSTRUCTOR_ID => {
            let r: f::messages::EditMessage = read(call)?;
            let w = world.resolve_peer(&r.peer)?;
            world.require(w, Right::Edit)?;
            ok(world.edit_message(info.dc, w, r.id, r.message.as_deref(), r.media.as_ref())?)
        }
        f::messages::UpdatePinnedMessage::CONSTRUCTOR_ID => {
            let r: f::messages::UpdatePinnedMessage = read(call)?;
            let w = world.resolve_peer(&r.peer)?;
            // Pinning in a channel takes the right to edit messages.
            world.require(w, Right::Edit)?;
            ok(world.update_pinned(w, r.id, r.unpin)?)
        }
        f::channels::DeleteMessages::CONSTRUCTOR_ID => {
            let r: f::channels::DeleteMessages = read(call)?;
            let w = world.resolve_channel(&r.channel)?;
            world.require(w, Right::Delete)?;
            ok(world.delete_messages(w, &r.id))
        }
        f::messages::DeleteMessages::CONSTRUCTOR_ID => {
            let r: f::messages::DeleteMessages = read(call)?;
            let w = saved(world)?;
            ok(world.delete_messages(w, &r.id))
        }
        f::channels::GetMessages::CONSTRUCTOR_ID => {
            let r: f::channels::GetMessages = read(call)?;
            let w = world.resolve_channel(&r.channel)?;
            ok(world.get_messages(w, &r.id)?)
        }
        f::messages::GetMessages::CONSTRUCTOR_ID => {
            let r: f::messages::GetMessages = read(call)?;
            let w = saved(world)?;
            ok(world.get_messages(w, &r.id)?)
        }
        f::messages::GetHistory::CONSTRUCTOR_ID => {
            let r: f::messages::GetHistory = read(call)?;
            let w = world.resolve_peer(&r.peer)?;
            ok(world.history(w, paging(r.offset_id, r.offset_date, r.add_offset, r.limit, r.max_id, r.min_id)))
        }
        f::messages::Search::CONSTRUCTOR_ID => {
            let r: f::messages::Search = read(call)?;
            let w = world.resolve_peer(&r.peer)?;
            use tl::enums::MessagesFilter as F;
            let (pinned_only, documents_only) = match r.filter {
                F::InputMessagesFilterEmpty => (false, false),
                F::InputMessagesFilterPinned => (true, false),
                F::InputMessagesFilterDocument => (false, true),
                _ => return Err(RpcErr::bad("FILTER_NOT_SUPPORTED")),
            };
            let filter =
                SearchFilter { query: r.q, pinned_only, documents_only, min_date: r.min_date, max_date: r.max_date };
            ok(world.search(w, &filter, paging(r.offset_id, 0, r.add_offset, r.limit, r.max_id, r.min_id)))
        }
        f::messages::GetDialogs::CONSTRUCTOR_ID => {
            let _: f::messages::GetDialogs = read(call)?;
            ok(world.dialogs())
        }
        f::upload::GetFile::CONSTRUCTOR_ID => {
            let r: f::upload::GetFile = read(call)?;
            ok(world.get_file(info.dc, &r.location, r.offset, r.limit, r.precise)?)
        }
        f::upload::GetFileHashes::CONSTRUCTOR_ID => {
            let r: f::upload::GetFileHashes = read(call)?;
            ok(world.file_hashes(info.dc, &r.location, r.offset)?)
        }
        _ => Err(RpcErr::bad("INPUT_METHOD_INVALID")),
    }
}

/// help.getConfig, answered on `this_dc`: the DC list holds only the
/// server's own loopback addresses (static, so grammers keeps them), so a
/// client never learns of (or falls back to) any other address.
fn config(this_dc: i32, dcs: &Dcs) -> tl::enums::Config {
    let dc_options = dcs
        .addrs
        .iter()
        .map(|(&id, addr)| {
            tl::enums::DcOption::Option(tl::types::DcOption {
                ipv6: addr.is_ipv6(),
                media_only: false,
                tcpo_only: false,
                cdn: false,
                r#static: true,
                this_port_only: false,
                id,
                ip_address: addr.ip().to_string(),
                port: addr.port() as i32,
                secret: None,
            })
        })
        .collect();
    tl::enums::Config::Config(tl::types::Config {
        default_p2p_contacts: false,
        preload_featured_stickers: false,
        revoke_pm_inbox: true,
        blocked_mode: false,
        force_try_ipv6: false,
        date: crate::mtproto::now_secs() as i32,
        expires: crate::mtproto::now_secs() as i32 + 3600,
        test_mode: false,
        this_dc,
        dc_options,
        dc_txt_domain_name: String::new(),
        chat_size_max: 200,
        megagroup_size_max: 200_000,
        forwarded_count_max: 100,
        online_update_period_ms: 210_000,
        offline_blur_timeout_ms: 5000,
        offline_idle_timeout_ms: 30_000,
        online_cloud_timeout_ms: 300_000,
        notify_cloud_delay_ms: 30_000,
        notify_default_delay_ms: 1500,
        push_chat_period_ms: 60_000,
        push_chat_limit: 2,
        edit_time_limit: 172_800,
        revoke_time_limit: i32::MAX,
        revoke_pm_time_limit: i32::MAX,
        rating_e_decay: 2_419_200,
        stickers_recent_limit: 200,
        channels_read_media_period: 604_800,
        tmp_sessions: None,
        call_receive_timeout_ms: 20_000,
        call_ring_timeout_ms: 90_000,
        call_connect_timeout_ms: 30_000,
        call_packet_timeout_ms: 10_000,
        me_url_prefix: "https://t.me/".into(),
        autoupdate_url_prefix: None,
        gif_search_username: None,
        venue_search_username: None,
        img_search_username: None,
        static_maps_provider: None,
        caption_length_max: 1024,
        message_length_max: 4096,
        webfile_dc_id: crate::DC_ID,
        suggested_lang_code: None,
        lang_pack_version: None,
        base_lang_pack_version: None,
        reactions_default: None,
        autologin_token: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwraps_layer_and_init_connection() {
        let inner = tl::functions::help::GetConfig {};
        let wrapped = tl::functions::InvokeWithLayer {
            layer: tl::LAYER,
            query: tl::functions::InitConnection {
                api_id: 1,
                device_model: "d".into(),
                system_version: "s".into(),
                app_version: "a".into(),
                system_lang_code: "en".into(),
                lang_pack: "".into(),
                lang_code: "en".into(),
                proxy: None,
                params: None,
                query: inner,
            },
        }
        .to_bytes();
        let mut info = ConnInfo::default();
        let call = unwrap(&wrapped, &mut info).unwrap();
        assert_eq!(call.name(), "help.getConfig");
        assert_eq!(info.layer, Some(tl::LAYER));
        assert!(info.initialized);
        let (mut world, mut dcs) = (World::default(), Dcs::default());
        assert!(answer(&mut world, &mut dcs, &call, &info).is_ok());
        let not_inited = answer(&mut world, &mut dcs, &call, &ConnInfo::default()).unwrap_err();
        assert_eq!(not_inited.message, "CONNECTION_NOT_INITED");
    }
}
