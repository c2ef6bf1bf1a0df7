// shardrun: runs one LLM across many worker processes.
#include "CLI/CLI.hpp"
#include "cli/commands.h"
#include "spdlog/cfg/env.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
  // Logs go to stderr so that stdout carries only the generated text.
  spdlog::set_default_logger(spdlog::stderr_color_mt("shardrun"));
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  spdlog::cfg::load_env_levels();  // SPDLOG_LEVEL=debug

  CLI::App app{"shardrun: run one LLM across many worker processes"};
  app.require_subcommand(0, 1);
  app.fallthrough();  // global options may follow the subcommand
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
      ->check(
          CLI::IsMember({"trace", "debug", "info", "warn", "warning", "error", "critical", "off"}));
  app.parse_complete_callback([&] { spdlog::set_level(spdlog::level::from_str(log_level)); });

  int exit_code = 0;
  shardrun::AddGenerateCommand(app, &exit_code);
  shardrun::AddInspectCommand(app, &exit_code);
  shardrun::AddSynthCommand(app, &exit_code);
  shardrun::AddWorkerCommand(app, &exit_code);
  shardrun::AddDevicesCommand(app, &exit_code);
  shardrun::AddKeygenCommand(app, &exit_code);
  shardrun::AddTokenCommand(app, &exit_code);
  shardrun::AddClusterCommands(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
