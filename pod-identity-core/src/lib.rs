//! The wire contracts of EKS Pod Identity.
