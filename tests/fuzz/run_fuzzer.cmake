# Runs a libFuzzer binary for a bounded time on a seed corpus made at test time from the
# heads of the reference files in ../shared (they are never copied into the repository).
# libFuzzer writes the inputs it finds into WORK_DIR/corpus and any crash into WORK_DIR.
#
#   cmake -DFUZZER=path -DWORK_DIR=dir -DSEEDS="a|b" -DSEED_BYTES=n -DSECONDS=s -DMAX_LEN=n
#         -P run_fuzzer.cmake
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}/corpus" "${WORK_DIR}/seeds")
string(REPLACE "|" ";" seeds "${SEEDS}")
foreach(seed IN LISTS seeds)
  if(NOT EXISTS "${seed}")
    message(FATAL_ERROR "seed file ${seed} is missing (is SHARDRUN_SHARED_DIR right?)")
  endif()
  get_filename_component(name "${seed}" NAME)
  execute_process(COMMAND head -c ${SEED_BYTES} "${seed}"
                  OUTPUT_FILE "${WORK_DIR}/seeds/${name}" RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "cannot copy the head of ${seed}")
  endif()
endforeach()
execute_process(
  COMMAND "${FUZZER}" -max_total_time=${SECONDS} -max_len=${MAX_LEN} -timeout=10
          -rss_limit_mb=4096 -print_final_stats=1 "-artifact_prefix=${WORK_DIR}/"
          "${WORK_DIR}/corpus" "${WORK_DIR}/seeds"
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (exit ${result}); the input is in ${WORK_DIR}")
endif()
