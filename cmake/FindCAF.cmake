# Finds CAF 0.17.x as Debian ships it (headers in /usr/include/caf, no CMake package config).
# Defines imported targets CAF::core, CAF::io and CAF::openssl, and CAF_VERSION.
find_path(CAF_INCLUDE_DIR caf/config.hpp)
find_library(CAF_CORE_LIBRARY caf_core)
find_library(CAF_IO_LIBRARY caf_io)
find_library(CAF_OPENSSL_LIBRARY caf_openssl)

if(CAF_INCLUDE_DIR)
  file(STRINGS "${CAF_INCLUDE_DIR}/caf/config.hpp" _caf_ver REGEX "^#define CAF_VERSION [0-9]+")
  string(REGEX REPLACE "^#define CAF_VERSION ([0-9]+)" "\\1" _caf_num "${_caf_ver}")
  math(EXPR _caf_major "${_caf_num} / 10000")
  math(EXPR _caf_minor "(${_caf_num} / 100) % 100")
  math(EXPR _caf_patch "${_caf_num} % 100")
  set(CAF_VERSION "${_caf_major}.${_caf_minor}.${_caf_patch}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(CAF
  REQUIRED_VARS CAF_INCLUDE_DIR CAF_CORE_LIBRARY CAF_IO_LIBRARY
  VERSION_VAR CAF_VERSION)

if(CAF_FOUND)
  if(CAF_VERSION VERSION_LESS 0.17 OR NOT CAF_VERSION VERSION_LESS 0.18)
    message(FATAL_ERROR "Relay is written against CAF 0.17.x, found ${CAF_VERSION}")
  endif()
  foreach(_part core io openssl)
    string(TOUPPER ${_part} _up)
    if(CAF_${_up}_LIBRARY AND NOT TARGET CAF::${_part})
      add_library(CAF::${_part} SHARED IMPORTED)
      set_target_properties(CAF::${_part} PROPERTIES
        IMPORTED_LOCATION "${CAF_${_up}_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}")
    endif()
  endforeach()
  set_property(TARGET CAF::io APPEND PROPERTY INTERFACE_LINK_LIBRARIES CAF::core)
endif()
