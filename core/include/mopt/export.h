/* Visibility macro shared by every public header. */
#ifndef MOPT_EXPORT_H
#define MOPT_EXPORT_H

#if defined(MOPT_BUILDING_LIBRARY)
#define MOPT_API __attribute__((visibility("default")))
#else
#define MOPT_API
#endif

#ifdef __cplusplus
#define MOPT_EXTERN_C_BEGIN extern "C" {
#define MOPT_EXTERN_C_END }
#else
#define MOPT_EXTERN_C_BEGIN
#define MOPT_EXTERN_C_END
#endif

#endif
