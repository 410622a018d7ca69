// CURVE encryption and authentication against a real broker: unknown keys are refused during the
// handshake and change nothing; authorised clients and workers run jobs; roles limit commands.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "errand/curve.hpp"
#include "harness.hpp"

using namespace errand;
using namespace errand::test;
namespace fs = std::filesystem;

namespace {

struct Keys {
    fs::path dir;
    fs::path authorized;
    explicit Keys(const TempDir& tmp) : dir(tmp / "keys"), authorized(tmp / "authorized") {
        fs::create_directories(dir);
        fs::create_directories(authorized);
        write_keypair(dir.string(), "broker");
        authorize("client", "client");
        authorize("worker", "worker");
        authorize("admin", "");
        write_keypair(dir.string(), "intruder");  // never authorised
    }
    void authorize(const std::string& name, const std::string& role) {
        auto pair = write_keypair(dir.string(), name);
        std::ofstream(authorized / (name + ".pub")) << pair.public_key << " " << role << "\n";
    }
    std::string key(const std::string& name) const { return (dir / (name + ".key")).string(); }
    std::string server_pub() const { return (dir / "broker.pub").string(); }
    CurveClient client(const std::string& name) const {
        return load_curve_client(server_pub(), key(name));
    }
    std::vector<std::string> broker_args() const {
        return {"--curve-secret-key", key("broker"), "--authorized-keys", authorized.string()};
    }
};

// One request over a CURVE DEALER, for commands the Client class does not send.
std::optional<Envelope> raw_request(const std::string& endpoint, const CurveClient& curve,
                                    std::string_view command, const std::string& body) {
    zmq::context_t ctx;
    zmq::socket_t sock(ctx, zmq::socket_type::dealer);
    sock.set(zmq::sockopt::linger, 0);
    apply_curve(sock, curve);
    sock.connect(endpoint);
    send_message(sock, "", command, body);
    zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(5000)) <= 0) return std::nullopt;
    return recv_message(sock, false);
}

}  // namespace

TEST_CASE("security: keygen writes a 0600 secret key and a readable public key") {
    TempDir tmp;
    auto r = run_cli({"keygen", "--dir", tmp.str(), "me"});
    REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
    auto perms = fs::status(tmp / "me.key").permissions();
    CHECK((perms & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
    CHECK((fs::status(tmp / "me.pub").permissions() & fs::perms::others_read) != fs::perms::none);
    auto secret = read_key_file((tmp / "me.key").string());
    CHECK(public_from_secret(secret) == read_key_file((tmp / "me.pub").string()));
    CHECK(r.out.find(read_key_file((tmp / "me.pub").string())) != std::string::npos);
    auto again = run_cli({"keygen", "--dir", tmp.str(), "me"});
    CHECK(again.exit_code != 0);
    CHECK(again.err.find("exists") != std::string::npos);
}

TEST_CASE("security: unknown keys and plain connections are refused; nothing reaches the db") {
    TempDir tmp;
    Keys keys(tmp);
    Broker broker(tmp, keys.broker_args(), keys.client("admin"));

    auto opts = broker.client_options(1000);
    opts.curve = keys.client("intruder");
    Client intruder(opts);
    CHECK_THROWS_AS(intruder.submit(job_spec("q", "evil")), ConnectionError);

    ClientOptions plain = broker.client_options(1000);
    plain.curve.reset();
    Client nobody(plain);
    CHECK_THROWS_AS(nobody.submit(job_spec("q", "evil")), ConnectionError);

    auto good = broker.client_options();
    good.curve = keys.client("client");
    Client client(good);
    CHECK(client.list().empty());
    CHECK(client.ping().version.size() > 0);
}

TEST_CASE("security: an authorised client and worker run a job end to end, encrypted") {
    TempDir tmp;
    Keys keys(tmp);
    Broker broker(tmp, keys.broker_args(), keys.client("admin"));
    WorkerDaemon worker(
        tmp, broker.endpoint(),
        WorkerSpec{"secure-w",
                   {"upper=tr a-z A-Z"},
                   1,
                   false,
                   {"--curve-server-key", keys.server_pub(), "--curve-key", keys.key("worker")}});
    auto r = run_cli({"--broker", broker.endpoint(), "--curve-server-key", keys.server_pub(),
                      "--curve-key", keys.key("client"), "submit", "-q", "upper", "--payload",
                      "secret", "--wait", "--wait-timeout", "20s"});
    REQUIRE_MESSAGE(r.exit_code == 0, std::string(describe(r) + worker.logs()));
    CHECK(r.out == "SECRET");
}

TEST_CASE("security: roles: a client key cannot act as a worker, a worker key cannot cancel") {
    TempDir tmp;
    Keys keys(tmp);
    Broker broker(tmp, keys.broker_args(), keys.client("admin"));

    RegisterRequest reg;
    reg.req = 7;
    reg.instance = "sneaky";
    reg.name = "sneaky";
    reg.queues = {"q"};
    reg.concurrency = 1;
    auto as_client =
        raw_request(broker.endpoint(), keys.client("client"), cmd::kRegister, encode(reg));
    REQUIRE(as_client.has_value());
    REQUIRE(as_client->command == cmd::kError);
    Body b1(as_client->body);
    auto e1 = decode_error(b1.reader());
    CHECK(e1.code == ErrorCode::forbidden);
    CHECK(e1.req == 7);
    CHECK(e1.message.find("client") != std::string::npos);

    auto copts = broker.client_options();
    copts.curve = keys.client("client");
    Client client(copts);
    auto id = client.submit(job_spec("q")).id;

    auto as_worker = raw_request(broker.endpoint(), keys.client("worker"), cmd::kCancel,
                                 encode(IdRequest{8, id}));
    REQUIRE(as_worker.has_value());
    REQUIRE(as_worker->command == cmd::kError);
    Body b2(as_worker->body);
    CHECK(decode_error(b2.reader()).code == ErrorCode::forbidden);
    CHECK(client.status(id).state == JobState::ready);  // not cancelled

    // A key with no role restriction may do both.
    auto as_admin = raw_request(broker.endpoint(), keys.client("admin"), cmd::kCancel,
                                encode(IdRequest{9, id}));
    REQUIRE(as_admin.has_value());
    CHECK(as_admin->command == cmd::kJob);
    CHECK(client.status(id).state == JobState::cancelled);
}

TEST_CASE("security: deleting a key's file revokes it without a restart; SIGHUP re-reads too") {
    TempDir tmp;
    Keys keys(tmp);
    Broker broker(tmp, keys.broker_args(), keys.client("admin"));
    auto opts = broker.client_options(1000);
    opts.curve = keys.client("client");
    Client open_connection(opts);
    REQUIRE(open_connection.list().empty());

    const std::string client_file = read_file(keys.authorized / "client.pub");
    fs::remove(keys.authorized / "client.pub");
    // A new connection with the revoked key is refused in the handshake...
    const bool refused = wait_until(
        [&] {
            Client fresh(opts);
            try {
                fresh.ping();
                return false;
            } catch (const ConnectionError&) {
                return true;
            }
        },
        10s, 100ms);
    CHECK_MESSAGE(refused, broker.logs());
    // ...and the connection it opened before gets `forbidden` for everything it sends.
    try {
        open_connection.list();
        FAIL("a revoked key's open connection was served");
    } catch (const BrokerError& e) {
        CHECK(e.code() == ErrorCode::forbidden);
        CHECK(std::string(e.what()).find("no longer authorised") != std::string::npos);
    }
    // Other keys are untouched.
    auto admin = broker.client_options(1000);
    admin.curve = keys.client("admin");
    Client(admin).ping();

    // A key file written back is admitted again, also without a restart.
    write_file(keys.authorized / "client.pub", client_file);
    const bool admitted = wait_until(
        [&] {
            Client fresh(opts);
            try {
                fresh.ping();
                return true;
            } catch (const ConnectionError&) {
                return false;
            }
        },
        10s, 100ms);
    CHECK_MESSAGE(admitted, broker.logs());

    broker.process().kill(SIGHUP);
    CHECK_MESSAGE(
        wait_until(
            [&] {
                return broker.process().err().find("SIGHUP: authorized keys re-read: 3 keys") !=
                       std::string::npos;
            },
            5s),
        broker.logs());
}

TEST_CASE("security: --events off loopback without CURVE warns like --listen; on loopback not") {
    TempDir tmp;
    const std::string open_events = "tcp://0.0.0.0:" + std::to_string(free_port());
    Broker exposed(tmp, {"--events", open_events});
    CHECK_MESSAGE(wait_until(
                      [&] {
                          return exposed.process().err().find("events on " + open_events +
                                                              " without CURVE") !=
                                 std::string::npos;
                      },
                      5s),
                  exposed.logs());

    TempDir other;
    Broker quiet(other, {"--events", "tcp://127.0.0.1:" + std::to_string(free_port())});
    REQUIRE(wait_until(
        [&] { return quiet.process().err().find("events published on") != std::string::npos; },
        5s));
    CHECK(quiet.process().err().find("without CURVE") == std::string::npos);
}
