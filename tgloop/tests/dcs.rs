//! The server's two DCs, driven by the real grammers client: a session homed
//! on DC 1 uploads a document into a channel; a session homed on DC 2 is
//! told `FILE_MIGRATE_1` at home, `AUTH_KEY_UNREGISTERED` on DC 1 until it
//! imports an authorization exported at home, and then reads it there;
//! grammers' own `iter_download` finds its way the same.

use std::sync::Arc;

use grammers_client::media::{Downloadable, Media};
use grammers_client::message::InputMessage;
use grammers_client::session::storages::MemorySession;
use grammers_client::session::types::{DcOption, PeerAuth, PeerId, PeerRef};
use grammers_client::session::{Session, SessionData};
use grammers_client::{tl, Client, InvocationError, SenderPool};
use tokio::task::JoinHandle;
use tstor_tgloop::{Server, Where};

struct Connected {
    client: Client,
    session: Arc<MemorySession>,
    runner: JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.runner.abort();
    }
}

fn connect(data: SessionData) -> Connected {
    let session = Arc::new(MemorySession::from(data));
    let pool = SenderPool::new(Arc::clone(&session), 1);
    let client = Client::new(pool.handle);
    let runner = tokio::spawn(pool.runner.run());
    Connected { client, session, runner }
}

fn rpc_error(e: InvocationError) -> (i32, String, Option<u32>) {
    match e {
        InvocationError::Rpc(r) => (r.code, r.name, r.value),
        other => panic!("expected an RPC error, got {other}"),
    }
}

async fn get_file(
    client: &Client,
    dc: i32,
    location: &tl::enums::InputFileLocation,
) -> Result<Vec<u8>, InvocationError> {
    let request = tl::functions::upload::GetFile {
        precise: false,
        cdn_supported: false,
        location: location.clone(),
        offset: 0,
        limit: 4096,
    };
    match client.invoke_in_dc(dc, &request).await? {
        tl::enums::upload::File::File(f) => Ok(f.bytes),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_document_is_served_by_its_own_dc_to_an_imported_authorization() {
    let server = Server::start().await.unwrap();
    let (channel_id, _) = server.with_world(|w| w.create_channel("two dcs", None)).unwrap();
    let hash = server.with_world(|w| w.channel_access_hash(channel_id)).unwrap();
    let channel = PeerRef { id: PeerId::channel(channel_id).unwrap(), auth: PeerAuth::from_hash(hash) };

    // A client homed on DC 1 uploads there.
    let on_dc1 = connect(server.session_data_on(1));
    let data = b"stored on the first datacenter".repeat(100);
    let uploaded = on_dc1.client.upload_stream(&mut &data[..], data.len(), "far".into()).await.unwrap();
    let msg = on_dc1.client.send_message(channel, InputMessage::new().document(uploaded)).await.unwrap();
    assert_eq!(server.with_world(|w| w.document_dcs(Where::Channel(channel_id))), vec![(msg.id(), 1)]);
    assert_eq!(server.calls_on(1, "upload.saveFilePart"), 1);
    assert_eq!(server.calls_on(2, "upload.saveFilePart"), 0);

    // The client homed on DC 2 learns DC 1's address from help.getConfig.
    let home = connect(server.session_data());
    let found = home.client.get_messages_by_id(channel, &[msg.id()]).await.unwrap().pop().unwrap().unwrap();
    let Some(Media::Document(doc)) = found.media() else { panic!("no document") };
    let location = doc.to_raw_input_location().unwrap();
    let dc1 = home.session.dc_option(1).unwrap().expect("DC 1 listed by help.getConfig");
    assert_eq!(std::net::SocketAddr::from(dc1.ipv4), server.addr_of(1).unwrap());

    // At home the document is elsewhere.
    let (code, name, value) = rpc_error(get_file(&home.client, 2, &location).await.unwrap_err());
    assert_eq!((code, name.as_str(), value), (303, "FILE_MIGRATE", Some(1)));
    assert_eq!(server.errors_answered("FILE_MIGRATE_1"), 1);

    // On DC 1, with the key a key exchange would have made, nothing works
    // until an authorization exported at home is imported there.
    let key = server.new_key_on(1);
    home.session.set_dc_option(&DcOption { auth_key: Some(key), ..dc1 }).await.unwrap();
    let (code, name, _) = rpc_error(get_file(&home.client, 1, &location).await.unwrap_err());
    assert_eq!((code, name.as_str()), (401, "AUTH_KEY_UNREGISTERED"));

    let export = |dc_id| tl::functions::auth::ExportAuthorization { dc_id };
    assert_eq!(rpc_error(home.client.invoke(&export(2)).await.unwrap_err()).1, "DC_ID_INVALID");
    let tl::enums::auth::ExportedAuthorization::Authorization(exported) = home.client.invoke(&export(1)).await.unwrap();
    let import = |bytes: Vec<u8>| tl::functions::auth::ImportAuthorization { id: exported.id, bytes };
    let refused = home.client.invoke_in_dc(1, &import(vec![1, 2, 3])).await.unwrap_err();
    assert_eq!(rpc_error(refused).1, "AUTH_BYTES_INVALID");
    home.client.invoke_in_dc(1, &import(exported.bytes.clone())).await.unwrap();
    assert_eq!(get_file(&home.client, 1, &location).await.unwrap(), &data[..]);
    // The exported bytes are good once.
    let replayed = home.client.invoke_in_dc(1, &import(exported.bytes.clone())).await.unwrap_err();
    assert_eq!(rpc_error(replayed).1, "AUTH_BYTES_INVALID");

    // grammers' own download follows the document's DC and copies the
    // authorization there itself.
    let fresh = connect(server.session_data());
    let key = server.new_key_on(1);
    fresh.session.set_dc_option(&DcOption { auth_key: Some(key), ..dc1 }).await.unwrap();
    let mut download = fresh.client.iter_download(&doc);
    let mut read = Vec::new();
    while let Some(chunk) = download.next().await.unwrap() {
        read.extend_from_slice(&chunk);
    }
    assert_eq!(read, data);
    // Three imports above (a bad one, a good one, one replayed), one here.
    assert_eq!(server.calls_on(1, "auth.importAuthorization"), 4);
    assert_eq!(server.calls_on(2, "auth.exportAuthorization"), 3);
}

#[tokio::test]
async fn a_key_is_known_only_to_its_own_dc() {
    let server = Server::start().await.unwrap();
    // The home key offered to DC 1: unknown there, so the connection fails.
    let mut data = server.session_data();
    let mut home = data.dc_options[&2].clone();
    home.id = 1;
    let addr = server.addr_of(1).unwrap();
    let std::net::SocketAddr::V4(v4) = addr else { panic!("loopback is IPv4") };
    home.ipv4 = v4;
    home.ipv6 = std::net::SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0);
    data.dc_options.insert(1, home);
    data.home_dc = 1;
    let wrong = connect(data);
    assert!(wrong.client.invoke(&tl::functions::updates::GetState {}).await.is_err());
    assert_eq!(server.calls_on(1, "updates.getState"), 0);
}
