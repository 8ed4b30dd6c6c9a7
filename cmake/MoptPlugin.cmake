# mopt_add_plugin(NAME SOURCES... [OUTPUT_DIR dir]): builds libmopt-NAME.so as a
# MODULE with hidden visibility. Plugins include the public headers only and
# link no core symbol: everything goes through the host table. Used in-tree
# and, through moptConfig.cmake, by out-of-tree plugins. Installed to
# MOPT_PLUGIN_INSTALL_DIR when that is set.
function(mopt_add_plugin NAME)
  cmake_parse_arguments(ARG "" "OUTPUT_DIR" "" ${ARGN})
  if(NOT ARG_OUTPUT_DIR)
    set(ARG_OUTPUT_DIR "${CMAKE_BINARY_DIR}/lib/mopt")
  endif()
  set(target mopt-plugin-${NAME})
  add_library(${target} MODULE ${ARG_UNPARSED_ARGUMENTS})
  set_target_properties(${target} PROPERTIES
    PREFIX "lib" OUTPUT_NAME "mopt-${NAME}" C_STANDARD 11 C_VISIBILITY_PRESET hidden
    LIBRARY_OUTPUT_DIRECTORY "${ARG_OUTPUT_DIR}")
  if(TARGET mopt::headers)
    target_link_libraries(${target} PRIVATE mopt::headers)
  else()
    target_include_directories(${target} PRIVATE "${MOPT_INCLUDE_DIR}")
  endif()
  if(MOPT_PLUGIN_INSTALL_DIR)
    install(TARGETS ${target} LIBRARY DESTINATION "${MOPT_PLUGIN_INSTALL_DIR}")
  endif()
endfunction()
