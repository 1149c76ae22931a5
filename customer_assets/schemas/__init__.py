"""What data means: the pandera model of every dataset, each column with its meaning, type and
constraints.

By subject: ``transactions`` (the week's transactions at each stage, the carried totals, the run's
quality and error log), ``customers`` (the sources' customers, the carried identity, the profiles)
and ``star`` (the analysts' star schema and marts). Import the models from here.
"""

from customer_assets.schemas.customers import (
    PROFILE_REQUIRED,
    CrmCustomers,
    CustomerEventAggregates,
    CustomerIdentityMap,
    ErpCustomers,
    IdentityMerges,
    UnifiedCustomerProfiles,
)
from customer_assets.schemas.star import (
    DimDate,
    FactTransactions,
    FactTransactionsQuarantine,
    MartChurnRetention,
    MartCohortRetention,
    MartWeeklySales,
    ProductSnapshots,
)
from customer_assets.schemas.transactions import (
    CUSTOMER_LIFECYCLES,
    TRANSACTION_SIZES,
    UTC_TS,
    CustomerHistory,
    DataQualityMetrics,
    PipelineErrorLog,
    QuarantinedTransactions,
    RawTransactions,
    TransactionAnomalies,
    TransformedTransactions,
    ValidatedTransactions,
)

__all__ = [
    "CUSTOMER_LIFECYCLES",
    "PROFILE_REQUIRED",
    "TRANSACTION_SIZES",
    "UTC_TS",
    "CrmCustomers",
    "CustomerEventAggregates",
    "CustomerHistory",
    "CustomerIdentityMap",
    "DataQualityMetrics",
    "DimDate",
    "ErpCustomers",
    "FactTransactions",
    "FactTransactionsQuarantine",
    "IdentityMerges",
    "MartChurnRetention",
    "MartCohortRetention",
    "MartWeeklySales",
    "PipelineErrorLog",
    "ProductSnapshots",
    "QuarantinedTransactions",
    "RawTransactions",
    "TransactionAnomalies",
    "TransformedTransactions",
    "UnifiedCustomerProfiles",
    "ValidatedTransactions",
]
