# Installation and the Debian packages (README "Install").
#
#   cmake --install build [--prefix P]     headers, static libraries, the CMake
#                                          package and .pc files, the binaries
#   make deb                               cairn_<v>_<arch>.deb (cairnd as a
#                                          systemd service, cairn, cairn-backup)
#                                          and cairn-dev_<v>_<arch>.deb
#
# Components: `dev` (headers, libraries, cairnConfig.cmake, cairn.pc) and
# `server` (the binaries; the systemd unit and /etc/default/cairnd only in the
# package: they are EXCLUDE_FROM_ALL, so `cmake --install --prefix P` writes
# nothing outside P).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(CAIRN_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/cairn)

# The libraries, static, in three export sets that the package config loads
# by component: types (absl only), engine (RocksDB), client (gRPC).
set_target_properties(cairn_types PROPERTIES EXPORT_NAME types)
set_target_properties(cairn_engine PROPERTIES EXPORT_NAME store)
set_target_properties(cairn_formats PROPERTIES EXPORT_NAME formats)
set_target_properties(cairn_connectors PROPERTIES EXPORT_NAME connectors)
set_target_properties(cairn_proto PROPERTIES EXPORT_NAME proto)
set_target_properties(cairn_wire PROPERTIES EXPORT_NAME wire)
set_target_properties(cairn_client PROPERTIES EXPORT_NAME client)
# cairn::engine: what an embedding program links, the store, the formats and
# the connectors.
add_library(cairn_embedded INTERFACE)
set_target_properties(cairn_embedded PROPERTIES EXPORT_NAME engine)
target_link_libraries(cairn_embedded INTERFACE cairn_engine cairn_formats cairn_connectors)
add_library(cairn::engine ALIAS cairn_embedded)
add_library(cairn::client ALIAS cairn_client)

install(TARGETS cairn_types EXPORT cairnTypesTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(TARGETS cairn_engine cairn_formats cairn_connectors cairn_embedded EXPORT cairnEngineTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(TARGETS cairn_proto cairn_wire cairn_client EXPORT cairnClientTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
foreach(set Types Engine Client)
  install(EXPORT cairn${set}Targets NAMESPACE cairn:: DESTINATION ${CAIRN_CMAKE_DIR}
          COMPONENT dev)
endforeach()

# The public headers: the engine's, the formats', the client's, version.h.
install(FILES
        engine/include/cairn/backup.h
        engine/include/cairn/connector.h
        engine/include/cairn/event.h
        engine/include/cairn/options.h
        engine/include/cairn/source.h
        engine/include/cairn/stats.h
        engine/include/cairn/status.h
        engine/include/cairn/store.h
        engine/formats/include/cairn/formats.h
        engine/connectors/include/cairn/connectors.h
        client/include/cairn/client.h
        ${PROJECT_BINARY_DIR}/engine/include/cairn/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/cairn COMPONENT dev)

configure_package_config_file(cmake/cairnConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/cmake/cairnConfig.cmake
                              INSTALL_DESTINATION ${CAIRN_CMAKE_DIR})
# 0.x: a minor version may change the API (README "Install").
write_basic_package_version_file(${PROJECT_BINARY_DIR}/cmake/cairnConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cmake/cairnConfig.cmake
              ${PROJECT_BINARY_DIR}/cmake/cairnConfigVersion.cmake
        DESTINATION ${CAIRN_CMAKE_DIR} COMPONENT dev)

# pkg-config files, relocatable: the prefix is found from the file's own
# directory (${pcfiledir}), so an install under any --prefix works.
file(RELATIVE_PATH CAIRN_PC_UP /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" CAIRN_PC_UP "${CAIRN_PC_UP}")
foreach(pc cairn cairn-client)
  configure_file(cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/cmake/${pc}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/cmake/${pc}.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
endforeach()

# The binaries.
install(TARGETS cairnd cairn_cli cairn_backup RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        COMPONENT server)
# The service: only in the package (absolute paths, EXCLUDE_FROM_ALL).
install(FILES server/dist/cairnd.service DESTINATION /lib/systemd/system COMPONENT server
        EXCLUDE_FROM_ALL)
install(FILES server/dist/cairnd.default DESTINATION /etc/default RENAME cairnd
        COMPONENT server EXCLUDE_FROM_ALL)

# The Debian packages (make deb; cpack -G DEB in the build directory).
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME cairn)
set(CPACK_PACKAGE_VENDOR cairn)
set(CPACK_PACKAGE_CONTACT "cairn maintainers <cairn@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "event-sourced state store")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL server dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_SERVER_PACKAGE_NAME cairn)
set(CPACK_DEBIAN_SERVER_PACKAGE_SECTION database)
set(CPACK_COMPONENT_SERVER_DESCRIPTION
    "event-sourced state store: cairnd (a systemd service), the cairn CLI and cairn-backup")
# Dependencies from the shared libraries the binaries link (dpkg-shlibdeps),
# and adduser for the cairn system user (postinst).
set(CPACK_DEBIAN_SERVER_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_SERVER_PACKAGE_DEPENDS adduser)
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/server/dist/postinst ${PROJECT_SOURCE_DIR}/server/dist/prerm
    ${PROJECT_SOURCE_DIR}/server/dist/postrm ${PROJECT_SOURCE_DIR}/server/dist/conffiles)
set(CPACK_DEBIAN_DEV_PACKAGE_NAME cairn-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_DEV_DESCRIPTION
    "cairn's headers, static libraries, CMake package (cairn::engine, cairn::client) and pkg-config files")
# Static libraries: the -dev packages of what they link.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "librocksdb-dev, liblz4-dev, libcurl4-openssl-dev, libnats-dev, libflatbuffers-dev, libabsl-dev, libgrpc++-dev, libprotobuf-dev, pkg-config")
include(CPack)
