#include "auth/zap_handler.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "auth/encoding.h"
#include "spdlog/spdlog.h"

namespace shardrun::auth {
namespace {

constexpr char kZapEndpoint[] = "inproc://zeromq.zap.01";

// ZAP request frames (after REP has removed the envelope).
enum ZapFrame { kVersion, kRequestId, kDomain, kAddress, kIdentity, kMechanism, kCredentials };

}  // namespace

absl::StatusOr<std::unique_ptr<ZapHandler>> ZapHandler::Start(
    zmq::context_t& context, std::shared_ptr<KeyAllowList> allow_list, WallClock clock) {
  std::unique_ptr<ZapHandler> handler(
      new ZapHandler(context, std::move(allow_list), std::move(clock)));
  try {
    handler->handler_.bind(kZapEndpoint);
    const std::string stop = absl::StrFormat("inproc://shardrun-zap-stop-%p", handler.get());
    handler->stop_receiver_.bind(stop);
    handler->stop_sender_.connect(stop);
  } catch (const zmq::error_t& e) {
    return absl::FailedPreconditionError(absl::StrCat("cannot start the ZAP handler on ",
                                                      kZapEndpoint, ": ", e.what(),
                                                      " (one handler per zmq context)"));
  }
  ZapHandler* raw = handler.get();
  handler->thread_ = std::thread([raw] { raw->Run(); });
  return handler;
}

ZapHandler::ZapHandler(zmq::context_t& context, std::shared_ptr<KeyAllowList> allow_list,
                       WallClock clock)
    : allow_list_(std::move(allow_list)),
      clock_(std::move(clock)),
      handler_(context, zmq::socket_type::rep),
      stop_receiver_(context, zmq::socket_type::pair),
      stop_sender_(context, zmq::socket_type::pair) {
  handler_.set(zmq::sockopt::linger, 0);
  stop_receiver_.set(zmq::sockopt::linger, 0);
  stop_sender_.set(zmq::sockopt::linger, 0);
}

ZapHandler::~ZapHandler() {
  if (thread_.joinable()) {
    try {
      stop_sender_.send(zmq::str_buffer("stop"), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      spdlog::error("ZAP handler: cannot signal the thread to stop: {}", e.what());
    }
    thread_.join();
  }
}

void ZapHandler::AdmitAnyKeyInDomain(const std::string& domain) {
  std::lock_guard<std::mutex> lock(mutex_);
  open_domains_.insert(domain);
}

bool ZapHandler::WaitForRefusals(uint64_t count, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return refused_changed_.wait_for(lock, timeout, [&] { return refused_.load() >= count; });
}

void ZapHandler::Run() {
  std::vector<zmq::message_t> request;
  try {
    while (true) {
      zmq::pollitem_t items[] = {{handler_.handle(), 0, ZMQ_POLLIN, 0},
                                 {stop_receiver_.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 2, std::chrono::milliseconds(-1));
      if (items[1].revents & ZMQ_POLLIN) return;
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      request.clear();
      do {
        request.emplace_back();
        if (!handler_.recv(request.back(), zmq::recv_flags::none)) return;
      } while (request.back().more());

      std::string status_text, user_id;
      const bool admit = Decide(request, &status_text, &user_id);
      const std::string request_id =
          request.size() > kRequestId ? request[kRequestId].to_string() : std::string();
      handler_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
      handler_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
      handler_.send(admit ? zmq::str_buffer("200") : zmq::str_buffer("400"),
                    zmq::send_flags::sndmore);
      handler_.send(zmq::buffer(status_text), zmq::send_flags::sndmore);
      handler_.send(zmq::buffer(user_id), zmq::send_flags::sndmore);
      handler_.send(zmq::message_t(), zmq::send_flags::none);  // no metadata
      if (admit) {
        admitted_.fetch_add(1);
      } else {
        const uint64_t refused = refused_.fetch_add(1) + 1;
        if (refused <= 10 || refused % 1000 == 0) {
          spdlog::warn("transport handshake refused: {} ({} refused so far)", status_text, refused);
        }
        std::lock_guard<std::mutex> lock(mutex_);
        refused_changed_.notify_all();
      }
    }
  } catch (const zmq::error_t& e) {
    // ETERM: the context is going away; anything else would leave handshakes unanswered.
    if (e.num() != ETERM) spdlog::error("ZAP handler stopped: {}", e.what());
  }
}

bool ZapHandler::Decide(const std::vector<zmq::message_t>& request, std::string* status_text,
                        std::string* user_id) {
  if (request.size() < kMechanism + 1 || request[kVersion].to_string_view() != "1.0") {
    *status_text = "malformed ZAP request";
    return false;
  }
  const std::string_view mechanism = request[kMechanism].to_string_view();
  const std::string address(request[kAddress].to_string_view());
  if (mechanism != "CURVE") {
    *status_text =
        absl::StrCat("peer ", address, " uses ", std::string(mechanism), ", CURVE is required");
    return false;
  }
  if (request.size() != kCredentials + 1 || request[kCredentials].size() != kCurveKeyBytes) {
    *status_text = absl::StrCat("peer ", address, ": malformed CURVE credentials");
    return false;
  }
  CurveKeyBytes key;
  std::memcpy(key.data(), request[kCredentials].data(), key.size());
  const std::string z85 = Z85EncodeKey(key);
  bool open_domain = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    open_domain = open_domains_.contains(std::string(request[kDomain].to_string_view()));
  }
  if (allow_list_ && allow_list_->Contains(key, clock_())) {
    *status_text = "OK";
  } else if (open_domain) {
    *status_text = "OK (not admitted yet: handshake messages only)";
  } else {
    *status_text = absl::StrCat("peer ", address, " key ", z85, " is not allowed");
    return false;
  }
  *user_id = z85;
  return true;
}

}  // namespace shardrun::auth
