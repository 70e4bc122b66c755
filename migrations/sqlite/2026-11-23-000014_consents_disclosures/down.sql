DROP TABLE disclosure_sites;
DROP TABLE disclosures;
DROP TABLE consents;
