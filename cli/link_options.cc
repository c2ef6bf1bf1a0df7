#include "cli/link_options.h"

namespace shardrun {

void AddLinkOptions(CLI::App* cmd, std::string* links) {
  cmd->add_option("--links", *links,
                  "How token ids, activations, logits, partial sums and expert messages travel "
                  "beside the ZeroMQ sockets (proto/link.h): auto (the default: shared memory "
                  "between processes on one host, a TCP connection of their own between hosts), "
                  "tcp (TCP links even on one host), none (ZeroMQ only)")
      ->check(CLI::IsMember({"auto", "tcp", "none"}));
  cmd->add_flag(
      "--no-local-link", [links](int64_t) { *links = "none"; }, "The same as --links none");
}

}  // namespace shardrun
