"""Completeness of a dictionary: for concepts of known categories, is there a feature dedicated to each, and how
does that depend on how often the concept occurs in the training tokens (research.md §4)?

    from workbench.analysis.completeness import CompletenessConfig, builtin_categories, completeness
    result = completeness(store, {"topk-1024": sae_1k, "topk-4096": sae_4k}, tokenizer=model.tokenizer)
    result.fits["topk-4096"].midpoint        # log10 frequency at which half the concepts have a feature
    result.save("runs/completeness.json"); CompletenessResult.load("runs/completeness.json")

Concepts
--------
Categories are small curated tables (chemical elements, countries, capital cities, planets, months), each concept
with its English, Spanish and French names (the embedded corpus is en/es/fr). :func:`check_against_corpus` checks
them against the embedded Wikipedia: a concept is kept when one of its names is an article title (months have no
articles; they are checked by occurrence instead). A concept's *forms* are its names as they occur in running text
(elements and months also in lower case), matched as whole words on token ids (with and without a leading space).
A form claimed by two concepts is resolved by category order (an earlier category keeps it: "Mercury" the planet,
"mercury" the element, "Luxembourg" the country) and dropped from both within one category; a few forms that are
common words in one of the languages (French "or", Spanish "radio"...) are never used (:data:`AMBIGUOUS_FORMS`).
Surface forms are not disambiguated otherwise (Georgia the country and the US state count together).

Frequency
---------
The number of occurrences of any form of the concept in the scanned store tokens, per token (BOS excluded). The
store is what the SAE trained on (a uniform shuffle of its tokens, minus a held-out part), so this estimates the
concept's frequency in the training stream.

Dedicated feature (the criterion)
---------------------------------
On the scanned tokens, every feature j has a firing count n_j (activation > ``threshold``). For a concept c with
occurrences (token spans):

- precision(c, j) = (firings of j on tokens inside c's spans) / n_j: how much of what j fires on is c;
- recall(c, j) = fraction of c's occurrences on which j fires on at least one token of the span.

c has a dedicated feature when some j has precision >= ``min_precision`` (0.5) and recall >= ``min_recall`` (0.5)
and fires on at least ``min_hits`` (2) of c's occurrences. Concepts seen fewer than ``min_hits`` times cannot pass
and are left out of the fits (``decidable`` False). A feature for a whole category (all countries) fails the
precision test for each country; a feature for a word and its neighbours ("France", "French") passes only if the
concept itself is at least half of its firings.

Fit
---
Per SAE, a logistic curve P(dedicated) = 1 / (1 + exp(-slope * (x - midpoint))) by maximum likelihood (IRLS with a
small ridge on the slope, which keeps separable data finite), on x = log10(frequency) and on the rescaled
x' = log10(frequency * n_alive), n_alive = features that fire on the scanned tokens. If coverage is governed by
frequency x dictionary size, the rescaled midpoints coincide across sizes (the curves collapse).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from workbench.core.persist import read_tagged_json

__all__ = [
    "AMBIGUOUS_FORMS",
    "CATEGORY_NAMES",
    "Category",
    "CompletenessConfig",
    "CompletenessResult",
    "Concept",
    "ConceptOccurrences",
    "ConceptScores",
    "SigmoidFit",
    "builtin_categories",
    "check_against_corpus",
    "completeness",
    "concept_feature_counts",
    "corpus_categories",
    "dedicated_features",
    "find_occurrences",
    "fit_sigmoid",
    "train_sizes",
]

FORMAT = "workbench-completeness"
FORMAT_VERSION = 1

# ----------------------------------------------------------------------------------------------------------------
# The curated tables: "English|Spanish|French" (alternatives separated by "/", "-" for none). Checked against the
# embedded corpus by check_against_corpus.
# ----------------------------------------------------------------------------------------------------------------

_PLANETS = """
Mercury|Mercurio|Mercure
Venus|Venus|Vénus
Mars|Marte|Mars
Jupiter|Júpiter|Jupiter
Saturn|Saturno|Saturne
Uranus|Urano|Uranus
Neptune|Neptuno|Neptune
"""

_COUNTRIES = """
Afghanistan|Afganistán|Afghanistan|Kabul|Kabul|Kaboul
Albania|Albania|Albanie|Tirana|Tirana|Tirana
Algeria|Argelia|Algérie|Algiers|Argel|Alger
Andorra|Andorra|Andorre|Andorra la Vella|Andorra la Vieja|Andorre-la-Vieille
Angola|Angola|Angola|Luanda|Luanda|Luanda
Antigua and Barbuda|Antigua y Barbuda|Antigua-et-Barbuda|-|-|-
Argentina|Argentina|Argentine|Buenos Aires|Buenos Aires|Buenos Aires
Armenia|Armenia|Arménie|Yerevan|Ereván|Erevan
Australia|Australia|Australie|Canberra|Canberra|Canberra
Austria|Austria|Autriche|Vienna|Viena|Vienne
Azerbaijan|Azerbaiyán|Azerbaïdjan|Baku|Bakú|Bakou
Bahamas|Bahamas|Bahamas|Nassau|Nasáu|Nassau
Bahrain|Baréin|Bahreïn|Manama|Manama|Manama
Bangladesh|Bangladés|Bangladesh|Dhaka|Daca|Dacca
Barbados|Barbados|Barbade|Bridgetown|Bridgetown|Bridgetown
Belarus|Bielorrusia/Belarús|Biélorussie|Minsk|Minsk|Minsk
Belgium|Bélgica|Belgique|Brussels|Bruselas|Bruxelles
Belize|Belice|Belize|Belmopan|Belmopán|Belmopan
Benin|Benín|Bénin|Porto-Novo|Porto Novo|Porto-Novo
Bhutan|Bután|Bhoutan|Thimphu|Timbu|Thimphou
Bolivia|Bolivia|Bolivie|Sucre|Sucre|Sucre
Bosnia and Herzegovina|Bosnia y Herzegovina|Bosnie-Herzégovine|Sarajevo|Sarajevo|Sarajevo
Botswana|Botsuana|Botswana|Gaborone|Gaborone|Gaborone
Brazil|Brasil|Brésil|Brasília/Brasilia|Brasilia|Brasilia
Brunei|Brunéi|Brunei|Bandar Seri Begawan|Bandar Seri Begawan|Bandar Seri Begawan
Bulgaria|Bulgaria|Bulgarie|Sofia|Sofía|Sofia
Burkina Faso|Burkina Faso|Burkina Faso|Ouagadougou|Uagadugú|Ouagadougou
Burundi|Burundi|Burundi|Gitega|Gitega|Gitega
Cambodia|Camboya|Cambodge|Phnom Penh|Nom Pen|Phnom Penh
Cameroon|Camerún|Cameroun|Yaoundé|Yaundé|Yaoundé
Canada|Canadá|Canada|Ottawa|Ottawa|Ottawa
Cape Verde/Cabo Verde|Cabo Verde|Cap-Vert|Praia|Praia|Praia
Central African Republic|República Centroafricana|République centrafricaine|Bangui|Bangui|Bangui
Chad|Chad|Tchad|N'Djamena|Yamena|N'Djaména
Chile|Chile|Chili|Santiago|Santiago de Chile|Santiago
China|China|Chine|Beijing/Peking|Pekín|Pékin
Colombia|Colombia|Colombie|Bogotá|Bogotá|Bogota
Comoros|Comoras|Comores|Moroni|Moroni|Moroni
Republic of the Congo|República del Congo|République du Congo|Brazzaville|Brazzaville|Brazzaville
Democratic Republic of the Congo|República Democrática del Congo|République démocratique du Congo|Kinshasa|Kinsasa|Kinshasa
Costa Rica|Costa Rica|Costa Rica|San José|San José|San José
Ivory Coast/Côte d'Ivoire|Costa de Marfil|Côte d'Ivoire|Yamoussoukro|Yamusukro|Yamoussoukro
Croatia|Croacia|Croatie|Zagreb|Zagreb|Zagreb
Cuba|Cuba|Cuba|Havana|La Habana|La Havane
Cyprus|Chipre|Chypre|Nicosia|Nicosia|Nicosie
Czech Republic/Czechia|República Checa/Chequia|Tchéquie/République tchèque|Prague|Praga|Prague
Denmark|Dinamarca|Danemark|Copenhagen|Copenhague|Copenhague
Djibouti|Yibuti|Djibouti|Djibouti|Yibuti|Djibouti
Dominica|Dominica|Dominique|Roseau|Roseau|Roseau
Dominican Republic|República Dominicana|République dominicaine|Santo Domingo|Santo Domingo|Saint-Domingue
East Timor/Timor-Leste|Timor Oriental|Timor oriental|Dili|Dili|Dili
Ecuador|Ecuador|Équateur|Quito|Quito|Quito
Egypt|Egipto|Égypte|Cairo|El Cairo|Le Caire
El Salvador|El Salvador|-|San Salvador|San Salvador|San Salvador
Equatorial Guinea|Guinea Ecuatorial|Guinée équatoriale|Malabo|Malabo|Malabo
Eritrea|Eritrea|Érythrée|Asmara|Asmara|Asmara
Estonia|Estonia|Estonie|Tallinn|Tallin|Tallinn
Eswatini/Swaziland|Esuatini/Suazilandia|Eswatini/Swaziland|Mbabane|Mbabane|Mbabane
Ethiopia|Etiopía|Éthiopie|Addis Ababa|Adís Abeba|Addis-Abeba
Fiji|Fiyi|Fidji|Suva|Suva|Suva
Finland|Finlandia|Finlande|Helsinki|Helsinki|Helsinki
France|Francia|France|Paris|París|Paris
Gabon|Gabón|Gabon|Libreville|Libreville|Libreville
Gambia|Gambia|Gambie|Banjul|Banjul|Banjul
Georgia|Georgia|Géorgie|Tbilisi|Tiflis|Tbilissi
Germany|Alemania|Allemagne|Berlin|Berlín|Berlin
Ghana|Ghana|Ghana|Accra|Acra|Accra
Greece|Grecia|Grèce|Athens|Atenas|Athènes
Grenada|-|-|-|-|-
Guatemala|Guatemala|Guatemala|Guatemala City|Ciudad de Guatemala|-
Guinea|Guinea|Guinée|Conakry|Conakri|Conakry
Guinea-Bissau|Guinea-Bisáu|Guinée-Bissau|Bissau|Bisáu|Bissau
Guyana|Guyana|Guyana|Georgetown|Georgetown|Georgetown
Haiti|Haití|Haïti|Port-au-Prince|Puerto Príncipe|Port-au-Prince
Honduras|Honduras|Honduras|Tegucigalpa|Tegucigalpa|Tegucigalpa
Hungary|Hungría|Hongrie|Budapest|Budapest|Budapest
Iceland|Islandia|Islande|Reykjavík/Reykjavik|Reikiavik|Reykjavik
India|India|Inde|New Delhi|Nueva Delhi|New Delhi
Indonesia|Indonesia|Indonésie|Jakarta|Yakarta|Jakarta
Iran|Irán|Iran|Tehran|Teherán|Téhéran
Iraq|Irak|Irak|Baghdad|Bagdad|Bagdad
Ireland|Irlanda|Irlande|Dublin|Dublín|Dublin
Israel|Israel|Israël|Jerusalem|Jerusalén|Jérusalem
Italy|Italia|Italie|Rome|Roma|Rome
Jamaica|Jamaica|Jamaïque|Kingston|Kingston|Kingston
Japan|Japón|Japon|Tokyo|Tokio|Tokyo
Jordan|Jordania|Jordanie|Amman|Amán|Amman
Kazakhstan|Kazajistán|Kazakhstan|Astana|Astaná|Astana
Kenya|Kenia|Kenya|Nairobi|Nairobi|Nairobi
Kiribati|Kiribati|Kiribati|Tarawa|Tarawa|Tarawa
North Korea|Corea del Norte|Corée du Nord|Pyongyang|Pionyang|Pyongyang
South Korea|Corea del Sur|Corée du Sud|Seoul|Seúl|Séoul
Kuwait|Kuwait|Koweït|Kuwait City|-|-
Kyrgyzstan|Kirguistán|Kirghizistan|Bishkek|Biskek|Bichkek
Laos|Laos|Laos|Vientiane|Vientián|Vientiane
Latvia|Letonia|Lettonie|Riga|Riga|Riga
Lebanon|Líbano|Liban|Beirut|Beirut|Beyrouth
Lesotho|Lesoto|Lesotho|Maseru|Maseru|Maseru
Liberia|Liberia|Liberia|Monrovia|Monrovia|Monrovia
Libya|Libia|Libye|Tripoli|Trípoli|Tripoli
Liechtenstein|Liechtenstein|Liechtenstein|Vaduz|Vaduz|Vaduz
Lithuania|Lituania|Lituanie|Vilnius|Vilna|Vilnius
Luxembourg|Luxemburgo|Luxembourg|-|-|-
Madagascar|Madagascar|Madagascar|Antananarivo|Antananarivo|Antananarivo
Malawi|Malaui|Malawi|Lilongwe|Lilongüe|Lilongwe
Malaysia|Malasia|Malaisie|Kuala Lumpur|Kuala Lumpur|Kuala Lumpur
Maldives|Maldivas|Maldives|Malé|Malé|Malé
Mali|Malí|Mali|Bamako|Bamako|Bamako
Malta|Malta|Malte|Valletta|La Valeta|La Valette
Marshall Islands|Islas Marshall|Îles Marshall|Majuro|Majuro|Majuro
Mauritania|Mauritania|Mauritanie|Nouakchott|Nuakchot|Nouakchott
Mauritius|-|-|Port Louis|Port Louis|Port-Louis
Mexico|México|Mexique|Mexico City|Ciudad de México|-
Micronesia|Micronesia|Micronésie|Palikir|Palikir|Palikir
Moldova|Moldavia|Moldavie|Chișinău/Chisinau|Chisináu|Chisinau
Monaco|Mónaco|Monaco|-|-|-
Mongolia|Mongolia|Mongolie|Ulaanbaatar|Ulán Bator|Oulan-Bator
Montenegro|Montenegro|Monténégro|Podgorica|Podgorica|Podgorica
Morocco|Marruecos|Maroc|Rabat|Rabat|Rabat
Mozambique|Mozambique|Mozambique|Maputo|Maputo|Maputo
Myanmar/Burma|Birmania|Birmanie|Naypyidaw|Naipyidó|Naypyidaw
Namibia|Namibia|Namibie|Windhoek|Windhoek|Windhoek
Nauru|Nauru|Nauru|-|-|-
Nepal|Nepal|Népal|Kathmandu|Katmandú|Katmandou
Netherlands|Países Bajos|Pays-Bas|Amsterdam|Ámsterdam|Amsterdam
New Zealand|Nueva Zelanda|Nouvelle-Zélande|Wellington|Wellington|Wellington
Nicaragua|Nicaragua|Nicaragua|Managua|Managua|Managua
Niger|Níger|Niger|Niamey|Niamey|Niamey
Nigeria|Nigeria|Nigeria|Abuja|Abuya|Abuja
North Macedonia|Macedonia del Norte|Macédoine du Nord|Skopje|Skopie|Skopje
Norway|Noruega|Norvège|Oslo|Oslo|Oslo
Oman|Omán|Oman|Muscat|Mascate|Mascate
Pakistan|Pakistán|Pakistan|Islamabad|Islamabad|Islamabad
Palau|Palaos|Palaos|Ngerulmud|Ngerulmud|Ngerulmud
Panama|Panamá|Panama|Panama City|Ciudad de Panamá|-
Papua New Guinea|Papúa Nueva Guinea|Papouasie-Nouvelle-Guinée|Port Moresby|Port Moresby|Port Moresby
Paraguay|Paraguay|Paraguay|Asunción|Asunción|Asuncion
Peru|Perú|Pérou|Lima|Lima|Lima
Philippines|Filipinas|Philippines|Manila|Manila|Manille
Poland|Polonia|Pologne|Warsaw|Varsovia|Varsovie
Portugal|Portugal|Portugal|Lisbon|Lisboa|Lisbonne
Qatar|Catar|Qatar|Doha|Doha|Doha
Romania|Rumania|Roumanie|Bucharest|Bucarest|Bucarest
Russia|Rusia|Russie|Moscow|Moscú|Moscou
Rwanda|Ruanda|Rwanda|Kigali|Kigali|Kigali
Saint Kitts and Nevis|San Cristóbal y Nieves|Saint-Christophe-et-Niévès|Basseterre|Basseterre|Basseterre
Saint Lucia|Santa Lucía|Sainte-Lucie|Castries|Castries|Castries
Saint Vincent and the Grenadines|San Vicente y las Granadinas|Saint-Vincent-et-les-Grenadines|Kingstown|Kingstown|Kingstown
Samoa|Samoa|Samoa|Apia|Apia|Apia
San Marino|San Marino|Saint-Marin|-|-|-
São Tomé and Príncipe|Santo Tomé y Príncipe|Sao Tomé-et-Principe|-|-|-
Saudi Arabia|Arabia Saudita|Arabie saoudite|Riyadh|Riad|Riyad
Senegal|Senegal|Sénégal|Dakar|Dakar|Dakar
Serbia|Serbia|Serbie|Belgrade|Belgrado|Belgrade
Seychelles|Seychelles|Seychelles|-|-|-
Sierra Leone|Sierra Leona|Sierra Leone|Freetown|Freetown|Freetown
Singapore|Singapur|Singapour|-|-|-
Slovakia|Eslovaquia|Slovaquie|Bratislava|Bratislava|Bratislava
Slovenia|Eslovenia|Slovénie|Ljubljana|Liubliana|Ljubljana
Solomon Islands|Islas Salomón|Îles Salomon|Honiara|Honiara|Honiara
Somalia|Somalia|Somalie|Mogadishu|Mogadiscio|Mogadiscio
South Africa|Sudáfrica|Afrique du Sud|Pretoria|Pretoria|Pretoria
South Sudan|Sudán del Sur|Soudan du Sud|Juba|Yuba|Djouba
Spain|España|Espagne|Madrid|Madrid|Madrid
Sri Lanka|Sri Lanka|Sri Lanka|Sri Jayawardenepura Kotte|Sri Jayawardenepura Kotte|Sri Jayawardenepura Kotte
Sudan|Sudán|Soudan|Khartoum|Jartum|Khartoum
Suriname|Surinam|Suriname|Paramaribo|Paramaribo|Paramaribo
Sweden|Suecia|Suède|Stockholm|Estocolmo|Stockholm
Switzerland|Suiza|Suisse|Bern|Berna|Berne
Syria|Siria|Syrie|Damascus|Damasco|Damas
Tajikistan|Tayikistán|Tadjikistan|Dushanbe|Dusambé|Douchanbé
Tanzania|Tanzania|Tanzanie|Dodoma|Dodoma|Dodoma
Thailand|Tailandia|Thaïlande|Bangkok|Bangkok|Bangkok
Togo|Togo|Togo|Lomé|Lomé|Lomé
Tonga|Tonga|Tonga|Nukuʻalofa/Nuku'alofa|Nukualofa|Nuku'alofa
Trinidad and Tobago|Trinidad y Tobago|Trinité-et-Tobago|Port of Spain|Puerto España|Port-d'Espagne
Tunisia|Túnez|Tunisie|Tunis|-|Tunis
Turkey|Turquía|Turquie|Ankara|Ankara|Ankara
Turkmenistan|Turkmenistán|Turkménistan|Ashgabat|Asjabad|Achgabat
Tuvalu|Tuvalu|Tuvalu|Funafuti|Funafuti|Funafuti
Uganda|Uganda|Ouganda|Kampala|Kampala|Kampala
Ukraine|Ucrania|Ukraine|Kyiv/Kiev|Kiev|Kiev
United Arab Emirates|Emiratos Árabes Unidos|Émirats arabes unis|Abu Dhabi|Abu Dabi|Abou Dabi
United Kingdom|Reino Unido|Royaume-Uni|London|Londres|Londres
United States|Estados Unidos|États-Unis|Washington, D.C.|Washington D. C.|-
Uruguay|Uruguay|Uruguay|Montevideo|Montevideo|Montevideo
Uzbekistan|Uzbekistán|Ouzbékistan|Tashkent|Taskent|Tachkent
Vanuatu|Vanuatu|Vanuatu|Port Vila|Port Vila|Port-Vila
Venezuela|Venezuela|Venezuela|Caracas|Caracas|Caracas
Vietnam/Viet Nam|Vietnam|Viêt Nam/Vietnam|Hanoi|Hanói|Hanoï
Yemen|Yemen|Yémen|Sanaa|Saná|Sanaa
Zambia|Zambia|Zambie|Lusaka|Lusaka|Lusaka
Zimbabwe|Zimbabue|Zimbabwe|Harare|Harare|Harare
"""

_ELEMENTS = """
Hydrogen|Hidrógeno|Hydrogène
Helium|Helio|Hélium
Lithium|Litio|Lithium
Beryllium|Berilio|Béryllium
Boron|Boro|-
Carbon|Carbono|Carbone
Nitrogen|Nitrógeno|Azote
Oxygen|Oxígeno|Oxygène
Fluorine|Flúor|Fluor
Neon|Neón|Néon
Sodium|Sodio|Sodium
Magnesium|Magnesio|Magnésium
Aluminium/Aluminum|Aluminio|Aluminium
Silicon|Silicio|Silicium
Phosphorus|Fósforo|Phosphore
Sulfur/Sulphur|Azufre|Soufre
Chlorine|Cloro|Chlore
Argon|Argón|Argon
Potassium|Potasio|Potassium
Calcium|Calcio|Calcium
Scandium|Escandio|Scandium
Titanium|Titanio|Titane
Vanadium|Vanadio|Vanadium
Chromium|Cromo|Chrome
Manganese|Manganeso|Manganèse
Iron|Hierro|Fer
Cobalt|Cobalto|Cobalt
Nickel|Níquel|Nickel
Copper|Cobre|Cuivre
Zinc|Zinc|Zinc
Gallium|Galio|Gallium
Germanium|Germanio|Germanium
Arsenic|Arsénico|Arsenic
Selenium|Selenio|Sélénium
Bromine|Bromo|Brome
Krypton|Kriptón|Krypton
Rubidium|Rubidio|Rubidium
Strontium|Estroncio|Strontium
Yttrium|Itrio|Yttrium
Zirconium|Circonio|Zirconium
Niobium|Niobio|Niobium
Molybdenum|Molibdeno|Molybdène
Technetium|Tecnecio|Technétium
Ruthenium|Rutenio|Ruthénium
Rhodium|Rodio|Rhodium
Palladium|Paladio|Palladium
Silver|Plata|-
Cadmium|Cadmio|Cadmium
Indium|-|Indium
Tin|Estaño|Étain
Antimony|Antimonio|Antimoine
Tellurium|Telurio|Tellure
Iodine|Yodo|Iode
Xenon|Xenón|Xénon
Caesium/Cesium|Cesio|Césium
Barium|Bario|Baryum
Lanthanum|Lantano|Lanthane
Cerium|Cerio|Cérium
Praseodymium|Praseodimio|Praséodyme
Neodymium|Neodimio|Néodyme
Promethium|Prometio|Prométhium
Samarium|Samario|Samarium
Europium|Europio|Europium
Gadolinium|Gadolinio|Gadolinium
Terbium|Terbio|Terbium
Dysprosium|Disprosio|Dysprosium
Holmium|Holmio|Holmium
Erbium|Erbio|Erbium
Thulium|Tulio|Thulium
Ytterbium|Iterbio|Ytterbium
Lutetium|Lutecio|Lutécium
Hafnium|Hafnio|Hafnium
Tantalum|Tantalio|Tantale
Tungsten|Wolframio|Tungstène
Rhenium|Renio|Rhénium
Osmium|Osmio|Osmium
Iridium|Iridio|Iridium
Platinum|Platino|Platine
Gold|Oro|-
Mercury|Mercurio|Mercure
Thallium|Talio|Thallium
Lead|Plomo|Plomb
Bismuth|Bismuto|Bismuth
Polonium|Polonio|Polonium
Astatine|Astato|Astate
Radon|Radón|Radon
Francium|Francio|Francium
Radium|-|Radium
Actinium|Actinio|Actinium
Thorium|Torio|Thorium
Protactinium|Protactinio|Protactinium
Uranium|Uranio|Uranium
Neptunium|Neptunio|Neptunium
Plutonium|Plutonio|Plutonium
Americium|Americio|Américium
Curium|Curio|Curium
Berkelium|Berkelio|Berkélium
Californium|Californio|Californium
Einsteinium|Einstenio|Einsteinium
Fermium|Fermio|Fermium
Mendelevium|Mendelevio|Mendélévium
Nobelium|Nobelio|Nobélium
Lawrencium|Lawrencio|Lawrencium
Rutherfordium|Rutherfordio|Rutherfordium
Dubnium|Dubnio|Dubnium
Seaborgium|Seaborgio|Seaborgium
Bohrium|Bohrio|Bohrium
Hassium|Hasio|Hassium
Meitnerium|Meitnerio|Meitnérium
Darmstadtium|Darmstatio|Darmstadtium
Roentgenium|Roentgenio|Roentgenium
Copernicium|Copernicio|Copernicium
Nihonium|Nihonio|Nihonium
Flerovium|Flerovio|Flérovium
Moscovium|Moscovio|Moscovium
Livermorium|Livermorio|Livermorium
Tennessine|Teneso|Tennesse
Oganesson|Oganesón|Oganesson
"""

_MONTHS = """
January|enero|janvier
February|febrero|février
March|marzo|mars
April|abril|avril
May|mayo|mai
June|junio|juin
July|julio|juillet
August|agosto|août
September|septiembre/setiembre|septembre
October|octubre|octobre
November|noviembre|novembre
December|diciembre|décembre
"""

# Forms that are mainly something else in one of the three languages; never matched.
AMBIGUOUS_FORMS: dict[str, str] = {
    "lead": "an English verb", "Lead": "an English verb",
    "May": "an English modal verb", "may": "an English modal verb",
    "or": "the French conjunction", "Or": "the French conjunction",
    "argent": "French for money", "Argent": "French for money",
    "bore": "an English verb", "Bore": "an English verb",
    "radio": "Spanish for radio", "Radio": "Spanish for radio",
    "indio": "Spanish for Indian", "Indio": "Spanish for Indian",
}

# category name -> (table, columns per concept, text case: "exact" or "both" (also lower / capitalised))
_TABLES: dict[str, tuple[str, slice, str]] = {
    "planets": (_PLANETS, slice(0, 3), "exact"),
    "countries": (_COUNTRIES, slice(0, 3), "exact"),
    "capitals": (_COUNTRIES, slice(3, 6), "exact"),
    "elements": (_ELEMENTS, slice(0, 3), "both"),
    "months": (_MONTHS, slice(0, 3), "both"),
}
CATEGORY_NAMES: tuple[str, ...] = tuple(_TABLES)  # also the priority order for shared forms
_ARTICLE_CATEGORIES = ("planets", "countries", "capitals", "elements")  # checked by article titles
LANGUAGES = ("en", "es", "fr")


@dataclass(frozen=True)
class Concept:
    """One concept: its (English) name, its category, its names per language and the text forms matched."""

    name: str
    category: str
    names: dict = field(default_factory=dict, hash=False, compare=False)  # lang -> tuple of names
    forms: tuple[str, ...] = ()


@dataclass
class Category:
    name: str
    concepts: list[Concept]
    dropped: dict[str, str] = field(default_factory=dict)  # concept or form -> why


def _cells(line: str) -> list[tuple[str, ...]]:
    return [tuple(p.strip() for p in cell.split("/") if p.strip() and p.strip() != "-") for cell in line.split("|")]


def _variants(name: str, case: str) -> list[str]:
    if case == "exact":
        return [name]
    lower = name[:1].lower() + name[1:]
    upper = name[:1].upper() + name[1:]
    return list(dict.fromkeys([name, lower, upper]))


def builtin_categories(names: Sequence[str] | None = None) -> list[Category]:
    """The curated categories (all, or ``names`` in :data:`CATEGORY_NAMES`), with shared forms resolved: an earlier
    category in :data:`CATEGORY_NAMES` keeps a form also claimed by a later one; two concepts of one category that
    share a form both lose it; :data:`AMBIGUOUS_FORMS` are removed; concepts left without forms are dropped."""
    wanted = list(CATEGORY_NAMES if names is None else names)
    unknown = [n for n in wanted if n not in _TABLES]
    if unknown:
        raise ValueError(f"unknown concept categor{'y' if len(unknown) == 1 else 'ies'} {unknown}: choose from "
                         f"{', '.join(CATEGORY_NAMES)}")
    raw: dict[str, list[tuple[str, dict, list[str]]]] = {}
    for cat in CATEGORY_NAMES:  # build every category, so priorities do not depend on the selection
        table, cols, case = _TABLES[cat]
        rows = []
        for line in table.strip().splitlines():
            cells = _cells(line)[cols]
            if not cells[0]:
                continue
            per_lang = {lang: cells[i] for i, lang in enumerate(LANGUAGES) if cells[i]}
            forms = [v for lang_names in per_lang.values() for n in lang_names for v in _variants(n, case)]
            rows.append((cells[0][0], per_lang, list(dict.fromkeys(forms))))
        raw[cat] = rows
    owner: dict[str, tuple[str, bool]] = {}  # form -> (first category that has it, whether it keeps it)
    for cat in CATEGORY_NAMES:
        counts: dict[str, int] = {}
        for _, _, forms in raw[cat]:
            for f in forms:
                counts[f] = counts.get(f, 0) + 1
        for f, n in counts.items():
            owner.setdefault(f, (cat, n == 1))
    out = []
    for cat in wanted:
        concepts, dropped = [], {}
        for name, per_lang, forms in raw[cat]:
            keep = []
            for f in forms:
                first, kept = owner[f]
                if f in AMBIGUOUS_FORMS:
                    dropped[f"{name}: {f}"] = AMBIGUOUS_FORMS[f]
                elif first != cat:
                    dropped[f"{name}: {f}"] = f"also a form of a concept in {first}"
                elif not kept:
                    dropped[f"{name}: {f}"] = f"shared by two concepts of {cat}"
                else:
                    keep.append(f)
            if keep:
                concepts.append(Concept(name, cat, {k: tuple(v) for k, v in per_lang.items()}, tuple(keep)))
            else:
                dropped[name] = "no form left after removing shared or ambiguous forms"
        out.append(Category(cat, concepts, dropped))
    return out


@lru_cache(maxsize=None)
def _article_names(lang: str) -> frozenset[str]:
    """Titles of the embedded articles of ``lang``, also without a trailing parenthetical ("Mercury (planet)")."""
    from workbench.data.corpus import CorpusSpec, iter_documents

    names = set()
    for doc in iter_documents(CorpusSpec(source="wiki", languages=(lang,), split="all")):
        names.add(doc.title)
        names.add(re.sub(r"\s*\([^)]*\)$", "", doc.title))
    return frozenset(names)


def check_against_corpus(categories: Sequence[Category], languages: Sequence[str] = LANGUAGES) -> dict[str, dict]:
    """For every concept, which of its names are titles of embedded Wikipedia articles (ignoring a trailing
    parenthetical, capitalised), per language: ``{concept name: {"category", "titles": {lang: [names]},
    "has_article"}}``. ``has_article`` is None for months, which are checked by occurrence instead."""
    from workbench.data.corpus import wiki_article

    out = {}
    for cat in categories:
        for c in cat.concepts:
            found = {}
            for lang in languages:
                titles = _article_names(lang)
                hits = [n for n in c.names.get(lang, ()) if (n[:1].upper() + n[1:]) in titles
                        or wiki_article(lang, n[:1].upper() + n[1:]) is not None]
                if hits:
                    found[lang] = hits
            out[c.name] = {"category": cat.name, "titles": found,
                           "has_article": bool(found) if cat.name in _ARTICLE_CATEGORIES else None}
    return out


def corpus_categories(names: Sequence[str] | None = None) -> list[Category]:
    """:func:`builtin_categories` restricted to the concepts with an embedded article in some language (months are
    kept: they are checked by occurrence)."""
    cats = builtin_categories(names)
    check = check_against_corpus(cats)
    out = []
    for cat in cats:
        keep = [c for c in cat.concepts if check[c.name]["has_article"] is not False]
        dropped = dict(cat.dropped)
        dropped.update({c.name: "no embedded article" for c in cat.concepts if check[c.name]["has_article"] is False})
        out.append(Category(cat.name, keep, dropped))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Occurrences in token ids
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ConceptOccurrences:
    """Where the concepts occur in a [n_contexts, ctx] array of token ids.

    ``token_occurrence`` [n_contexts * ctx] is the occurrence id covering each token (-1: none);
    ``occurrence_concept`` [n_occurrences] the concept of each occurrence; ``n_tokens`` the tokens scanned
    (BOS excluded)."""

    concepts: list[Concept]
    token_occurrence: np.ndarray
    occurrence_concept: np.ndarray
    n_tokens: int

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.occurrence_concept, minlength=len(self.concepts)).astype(np.int64)

    @property
    def frequency(self) -> np.ndarray:
        return self.counts / max(self.n_tokens, 1)


def _form_ids(tokenizer, form: str) -> list[tuple[int, ...]]:
    out = []
    for text in (" " + form, form):
        ids = tuple(int(i) for i in tokenizer.encode(text, add_special_tokens=False))
        if ids:
            out.append(ids)
    return list(dict.fromkeys(out))


def find_occurrences(token_ids: np.ndarray, tokenizer, concepts: Sequence[Concept], *, skip_first: bool = True,
                     token_text: Callable[[int], str] | None = None) -> ConceptOccurrences:
    """Whole-word occurrences of the concepts' forms in ``token_ids`` [n_contexts, ctx].

    Each form is matched as its token ids with and without a leading space. At each position the longest matching
    form wins and the tokens it covers are not matched again. A match is kept only at word boundaries: the token
    after it must not start with a letter (else the form is the prefix of a longer word), and for a form without a
    leading space the token before it must not end with a letter. ``skip_first`` ignores position 0 (BOS).
    ``token_text`` maps an id to its text (default ``tokenizer.decode([id])``)."""
    tokens = np.asarray(token_ids)
    if tokens.ndim != 2:
        raise ValueError(f"token_ids must be [n_contexts, ctx], got shape {tokens.shape}")
    if not concepts:
        raise ValueError("no concepts to look for")
    decode = token_text or (lambda i: tokenizer.decode([int(i)]))
    text_cache: dict[int, str] = {}

    def text(i: int) -> str:
        if i not in text_cache:
            text_cache[i] = decode(i)
        return text_cache[i]

    by_first: dict[int, list[tuple[tuple[int, ...], int, bool]]] = {}
    for ci, c in enumerate(concepts):
        for form in c.forms:
            for ids in _form_ids(tokenizer, form):
                spaced = text(ids[0])[:1].isspace()
                by_first.setdefault(ids[0], []).append((ids, ci, spaced))
    for first in by_first:  # longest first, so the longest match wins
        by_first[first].sort(key=lambda t: -len(t[0]))

    n_ctx, ctx = tokens.shape
    flat = tokens.reshape(-1)
    start = 1 if skip_first else 0
    cand_mask = np.isin(tokens[:, start:], np.fromiter(by_first, dtype=np.int64))
    rows, cols = np.nonzero(cand_mask)
    token_occurrence = np.full(flat.shape[0], -1, dtype=np.int64)
    occ_concept: list[int] = []
    covered_until = -1
    for r, col in zip(rows.tolist(), (cols + start).tolist()):
        pos = r * ctx + col
        if pos <= covered_until:
            continue
        row = tokens[r]
        for ids, ci, spaced in by_first[int(row[col])]:
            end = col + len(ids)
            if end > ctx or tuple(int(t) for t in row[col:end]) != ids:
                continue
            if end < ctx and text(int(row[end]))[:1].isalpha():
                continue
            if not spaced and col > start and text(int(row[col - 1]))[-1:].isalpha():
                continue
            token_occurrence[pos:pos + len(ids)] = len(occ_concept)
            occ_concept.append(ci)
            covered_until = pos + len(ids) - 1
            break
    return ConceptOccurrences(list(concepts), token_occurrence, np.array(occ_concept, dtype=np.int64),
                              n_tokens=int(n_ctx * (ctx - start)))


# ----------------------------------------------------------------------------------------------------------------
# Feature statistics and the dedicated-feature criterion
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class CompletenessConfig:
    """The dedicated-feature criterion (see the module docstring) and how the scan runs."""

    min_precision: float = 0.5
    min_recall: float = 0.5
    min_hits: int = 2
    threshold: float = 0.0
    max_tokens: int | None = None  # scan only the first contexts of the store (None: all)
    chunk_contexts: int = 32
    ridge: float = 1e-3  # on the sigmoid's slope
    confidence: float = 0.95
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("min_precision", "min_recall"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f"CompletenessConfig.{name} must lie in (0, 1], got {v}")
        if self.min_hits < 1 or self.chunk_contexts < 1:
            raise ValueError("CompletenessConfig.min_hits and chunk_contexts must be positive integers")


@dataclass
class FeatureCounts:
    """Firing statistics of one SAE over the scanned tokens: ``count`` [d_sae] firings of each feature,
    ``token_hits`` [n_concepts, d_sae] firings inside each concept's spans, ``occ_hits`` [n_concepts, d_sae]
    occurrences of each concept on which each feature fires."""

    count: torch.Tensor
    token_hits: torch.Tensor
    occ_hits: torch.Tensor

    @property
    def n_alive(self) -> int:
        return int((self.count > 0).sum())


def concept_feature_counts(store, sae, occurrences: ConceptOccurrences, config: CompletenessConfig | None = None,
                           *, hook: str | None = None) -> FeatureCounts:
    """Encode the store's contexts (the first ``max_tokens``) with ``sae`` and count firings (see
    :class:`FeatureCounts`). ``occurrences`` must come from the same contexts' token ids."""
    from tqdm.auto import tqdm

    from workbench.analysis.feature_kernels import SparseEncoder
    from workbench.analysis.features import resolve_hook

    cfg = config or CompletenessConfig()
    hook = resolve_hook(store, sae, hook)
    ctx = int(store.context_size)
    n_ctx = occurrences.token_occurrence.shape[0] // ctx
    if n_ctx > store.n_contexts:
        raise ValueError(f"the occurrences cover {n_ctx} contexts but the store has {store.n_contexts}: find them "
                         f"on this store's token ids")
    d_sae, n_con = int(sae.cfg.d_sae), len(occurrences.concepts)
    count = torch.zeros(d_sae, dtype=torch.int64)
    token_hits = torch.zeros(n_con * d_sae, dtype=torch.int64)
    occ_hits = torch.zeros(n_con * d_sae, dtype=torch.int64)
    occ_of_tok = torch.from_numpy(occurrences.token_occurrence)
    occ_con = torch.from_numpy(occurrences.occurrence_concept)
    skip_bos = bool(store.prepend_bos)
    encoder = SparseEncoder(sae, cfg.threshold)
    chunk = cfg.chunk_contexts * ctx
    was_training = sae.training
    sae.eval()
    bar = tqdm(total=n_ctx * ctx, unit="tok", unit_scale=True, desc=f"scan d_sae={d_sae}", disable=not cfg.progress)
    offset = 0
    try:
        for x in store.iter_batches(chunk, hook=hook, shuffle=False, exclude_bos=False, drop_last=False,
                                    max_tokens=n_ctx * ctx, dtype=torch.float32):
            rows, feats, _ = encoder(x.to(sae.device))
            rows, feats = rows.cpu() + offset, feats.cpu().to(torch.int64)
            if skip_bos:
                keep = rows % ctx != 0
                rows, feats = rows[keep], feats[keep]
            count += torch.bincount(feats, minlength=d_sae)
            occ = occ_of_tok[rows]
            on = occ >= 0
            if bool(on.any()):
                o, f = occ[on], feats[on]
                token_hits.index_add_(0, occ_con[o] * d_sae + f, torch.ones_like(f))
                pairs = torch.unique(o * d_sae + f)  # one per (occurrence, feature)
                occ_hits.index_add_(0, occ_con[pairs // d_sae] * d_sae + pairs % d_sae, torch.ones_like(pairs))
            offset += x.shape[0]
            bar.update(x.shape[0])
    finally:
        bar.close()
        sae.train(was_training)
    return FeatureCounts(count, token_hits.view(n_con, d_sae), occ_hits.view(n_con, d_sae))


@dataclass
class ConceptScores:
    """Per concept: whether a dedicated feature exists, the best feature and its precision / recall."""

    present: np.ndarray        # bool [n_concepts]
    decidable: np.ndarray      # bool: occurs at least min_hits times
    best_feature: np.ndarray   # int [n_concepts], -1 when no feature fires on the concept
    precision: np.ndarray
    recall: np.ndarray


def dedicated_features(count, token_hits, occ_hits, n_occurrences, *, min_precision: float = 0.5,
                       min_recall: float = 0.5, min_hits: int = 2) -> ConceptScores:
    """Apply the criterion to firing statistics (tensors or arrays; see :class:`FeatureCounts`).

    The best feature of a concept is the qualifying feature of highest precision * recall, else (none qualifies)
    the feature of highest precision * recall overall."""
    count = torch.as_tensor(count, dtype=torch.float32)
    th = torch.as_tensor(token_hits, dtype=torch.float32)
    oh = torch.as_tensor(occ_hits, dtype=torch.float32)
    n_occ = torch.as_tensor(n_occurrences, dtype=torch.float32)
    if th.dim() != 2 or th.shape != oh.shape or th.shape[1] != count.shape[0] or th.shape[0] != n_occ.shape[0]:
        raise ValueError(f"shapes disagree: count {tuple(count.shape)}, token_hits {tuple(th.shape)}, occ_hits "
                         f"{tuple(oh.shape)}, n_occurrences {tuple(n_occ.shape)}")
    precision = th / count.clamp_min(1)[None, :]
    recall = oh / n_occ.clamp_min(1)[:, None]
    ok = (precision >= min_precision) & (recall >= min_recall) & (oh >= min_hits)
    score = precision * recall
    best_ok = torch.where(ok, score, torch.full_like(score, -1.0)).argmax(1)
    best_any = score.argmax(1)
    present = ok.any(1)
    best = torch.where(present, best_ok, best_any)
    fired = oh.gather(1, best[:, None]).squeeze(1) > 0
    rows = torch.arange(th.shape[0])
    return ConceptScores(present=present.numpy(), decidable=(n_occ >= min_hits).numpy(),
                         best_feature=torch.where(fired, best, torch.full_like(best, -1)).numpy(),
                         precision=precision[rows, best].numpy(), recall=recall[rows, best].numpy())


# ----------------------------------------------------------------------------------------------------------------
# The sigmoid fit (pure)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SigmoidFit:
    """P(present) = 1 / (1 + exp(-slope * (x - midpoint))). ``midpoint_ci`` (delta method) and ``slope_ci`` are
    Wald intervals from the inverse Fisher information; ``defined`` is False (with ``reason``) when every concept
    is present or every one absent, and ``separable`` when a threshold splits them perfectly (the slope is then
    set by the ridge and its interval is not meaningful). ``in_range`` says whether the midpoint lies within the
    observed x; with very few present (or absent) concepts it is often far outside, an extrapolation."""

    midpoint: float
    slope: float
    midpoint_ci: tuple[float, float]
    slope_ci: tuple[float, float]
    n: int
    n_present: int
    defined: bool
    separable: bool
    in_range: bool = False  # the midpoint lies within the observed x (else it is an extrapolation)
    reason: str = ""

    def predict(self, x) -> np.ndarray:
        from scipy.special import expit

        return expit(self.slope * (np.asarray(x, dtype=np.float64) - self.midpoint))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["midpoint_ci"], out["slope_ci"] = list(self.midpoint_ci), list(self.slope_ci)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SigmoidFit":
        data = dict(data)
        data["midpoint_ci"], data["slope_ci"] = tuple(data["midpoint_ci"]), tuple(data["slope_ci"])
        return cls(**data)


def fit_sigmoid(x, y, *, ridge: float = 1e-3, confidence: float = 0.95, max_iter: int = 100) -> SigmoidFit:
    """Maximum-likelihood logistic fit of binary ``y`` on ``x`` (IRLS; ``ridge`` penalises the slope)."""
    from scipy import stats
    from scipy.special import expit

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.size != y.size or x.size == 0:
        raise ValueError(f"x and y need the same non-zero length, got {x.size} and {y.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite (drop concepts that never occur before taking log frequencies)")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y must be 0/1 (absent/present)")
    n, k = int(x.size), int(y.sum())
    nan2 = (math.nan, math.nan)
    if k == 0 or k == n:
        return SigmoidFit(math.nan, math.nan, nan2, nan2, n, k, False, False, False,
                          "every concept is " + ("present" if k == n else "absent") + ": no midpoint to fit")
    xm, xs = x.mean(), x.std() or 1.0
    z = (x - xm) / xs  # standardised for conditioning
    X = np.stack([np.ones(n), z], 1)
    R = np.diag([0.0, ridge * n])
    beta = np.zeros(2)
    for _ in range(max_iter):
        p = expit(X @ beta)
        w = p * (1 - p)
        H = X.T @ (X * w[:, None]) + R
        step = np.linalg.solve(H, X.T @ (y - p) - R @ beta)
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    p = expit(X @ beta)
    H = X.T @ (X * (p * (1 - p))[:, None]) + R
    cov = np.linalg.inv(H)
    a, b = beta
    slope = b / xs
    mid = xm - a / b * xs if b != 0 else math.nan
    zq = float(stats.norm.ppf(0.5 + confidence / 2))
    se_b = math.sqrt(max(cov[1, 1], 0.0)) / xs
    # midpoint in z units: -a/b; delta method
    g = np.array([-1.0 / b, a / b ** 2]) if b != 0 else np.array([math.nan, math.nan])
    se_mid = math.sqrt(max(float(g @ cov @ g), 0.0)) * xs
    order = np.argsort(x)
    ys = y[order]
    separable = bool(np.all(np.diff(ys) >= 0)) or bool(np.all(np.diff(ys) <= 0))
    return SigmoidFit(midpoint=float(mid), slope=float(slope),
                      midpoint_ci=(float(mid - zq * se_mid), float(mid + zq * se_mid)),
                      slope_ci=(float(slope - zq * se_b), float(slope + zq * se_b)), n=n, n_present=k, defined=True,
                      separable=separable, in_range=bool(x.min() <= mid <= x.max()))


# ----------------------------------------------------------------------------------------------------------------
# The analysis
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class CompletenessResult:
    """Per SAE: the concept table and the fits on raw and rescaled log frequency."""

    concepts: list[dict]             # name, category, forms, count, frequency
    n_tokens: int
    saes: dict[str, dict]            # name -> {"d_sae", "n_alive", "present", "decidable", "best_feature", ...}
    fits: dict[str, SigmoidFit]      # name -> fit on log10(frequency)
    rescaled_fits: dict[str, SigmoidFit]  # name -> fit on log10(frequency * n_alive)
    pooled_rescaled: SigmoidFit | None
    config: dict

    def table(self, sae: str) -> list[dict]:
        """One row per concept for SAE ``sae``."""
        if sae not in self.saes:
            raise ValueError(f"unknown SAE {sae!r}: the result has {list(self.saes)}")
        s = self.saes[sae]
        return [{**{k: c[k] for k in ("name", "category", "count", "frequency")}, "present": s["present"][i],
                 "decidable": s["decidable"][i], "best_feature": s["best_feature"][i],
                 "precision": s["precision"][i], "recall": s["recall"][i]} for i, c in enumerate(self.concepts)]

    def summary(self) -> list[dict]:
        """One row per SAE: size, alive features, concepts decided / covered, the median precision of the concepts'
        best features (how close the dictionary comes to dedicated features), the two midpoints."""
        rows = []
        for name, s in self.saes.items():
            f, g = self.fits[name], self.rescaled_fits[name]
            dec = np.asarray(s["decidable"], dtype=bool)
            prec = np.asarray(s["precision"], dtype=np.float64)[dec]
            rows.append({"sae": name, "d_sae": s["d_sae"], "n_alive": s["n_alive"], "decidable": int(dec.sum()),
                         "covered": int(np.asarray(s["present"], dtype=bool)[dec].sum()),
                         "median_best_precision": float(np.median(prec)) if prec.size else math.nan,
                         "midpoint_log10_freq": f.midpoint, "midpoint_ci": list(f.midpoint_ci), "slope": f.slope,
                         "midpoint_rescaled": g.midpoint, "midpoint_rescaled_ci": list(g.midpoint_ci),
                         "separable": f.separable, "in_range": f.in_range})
        return rows

    def curves(self, sae: str, rescaled: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(x, present) of the decidable concepts of ``sae``: x = log10 frequency (times n_alive if rescaled)."""
        s = self.saes[sae]
        freq = np.array([c["frequency"] for c in self.concepts])
        dec = np.asarray(s["decidable"], dtype=bool)
        x = np.log10(freq[dec] * (s["n_alive"] if rescaled else 1))
        return x, np.asarray(s["present"], dtype=bool)[dec].astype(np.float64)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "concepts": self.concepts, "n_tokens": self.n_tokens,
                "saes": self.saes, "fits": {k: v.to_dict() for k, v in self.fits.items()},
                "rescaled_fits": {k: v.to_dict() for k, v in self.rescaled_fits.items()},
                "pooled_rescaled": self.pooled_rescaled.to_dict() if self.pooled_rescaled else None,
                "config": self.config}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=True))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CompletenessResult":
        data = read_tagged_json(path, format=FORMAT, what="a completeness result",
                                fix="run workbench.analysis.completeness.completeness(..., out_path=...) to write it")
        return cls(concepts=data["concepts"], n_tokens=int(data["n_tokens"]), saes=data["saes"],
                   fits={k: SigmoidFit.from_dict(v) for k, v in data["fits"].items()},
                   rescaled_fits={k: SigmoidFit.from_dict(v) for k, v in data["rescaled_fits"].items()},
                   pooled_rescaled=SigmoidFit.from_dict(data["pooled_rescaled"]) if data["pooled_rescaled"] else None,
                   config=data["config"])


def completeness(store, saes: Mapping[str, object], categories: Sequence[Category] | None = None,
                 config: CompletenessConfig | None = None, *, tokenizer=None, hook: str | None = None,
                 out_path: str | Path | None = None) -> CompletenessResult:
    """Find the concepts in the store's tokens, score every SAE in ``saes`` (name -> SAE, all on the store's hook)
    and fit the coverage curves. ``categories`` default to :func:`corpus_categories` (all built-in categories,
    concepts with an embedded article). ``tokenizer`` defaults to the store's model's. ``out_path`` saves JSON."""
    from workbench.data.models import load_tokenizer

    cfg = config or CompletenessConfig()
    if not saes:
        raise ValueError("no SAE to score: pass {name: sae}")
    cats = list(categories) if categories is not None else corpus_categories()
    concepts = [c for cat in cats for c in cat.concepts]
    if not concepts:
        raise ValueError("the categories hold no concepts")
    tokenizer = tokenizer or load_tokenizer(store.model_name)
    ctx = int(store.context_size)
    n_ctx = store.n_contexts if cfg.max_tokens is None else min(store.n_contexts, -(-int(cfg.max_tokens) // ctx))
    tokens = store.token_ids()[:n_ctx]
    occ = find_occurrences(tokens, tokenizer, concepts, skip_first=bool(store.prepend_bos))
    counts, freq = occ.counts, occ.frequency
    table = [{"name": c.name, "category": c.category, "forms": list(c.forms), "count": int(counts[i]),
              "frequency": float(freq[i])} for i, c in enumerate(concepts)]
    per_sae, fits, rescaled = {}, {}, {}
    pooled_x, pooled_y = [], []
    for name, sae in saes.items():
        fc = concept_feature_counts(store, sae, occ, cfg, hook=hook)
        sc = dedicated_features(fc.count, fc.token_hits, fc.occ_hits, counts, min_precision=cfg.min_precision,
                                min_recall=cfg.min_recall, min_hits=cfg.min_hits)
        n_alive = fc.n_alive
        per_sae[name] = {"d_sae": int(sae.cfg.d_sae), "n_alive": n_alive, "present": sc.present.tolist(),
                         "decidable": sc.decidable.tolist(), "best_feature": sc.best_feature.tolist(),
                         "precision": sc.precision.tolist(), "recall": sc.recall.tolist()}
        dec = sc.decidable
        x = np.log10(freq[dec])
        y = sc.present[dec].astype(np.float64)
        fits[name] = fit_sigmoid(x, y, ridge=cfg.ridge, confidence=cfg.confidence)
        xr = x + math.log10(max(n_alive, 1))
        rescaled[name] = fit_sigmoid(xr, y, ridge=cfg.ridge, confidence=cfg.confidence)
        pooled_x.append(xr)
        pooled_y.append(y)
    pooled = fit_sigmoid(np.concatenate(pooled_x), np.concatenate(pooled_y), ridge=cfg.ridge,
                         confidence=cfg.confidence) if len(saes) > 1 else None
    cfg_dict = {k: v for k, v in asdict(cfg).items() if k != "progress"}
    cfg_dict["categories"] = [c.name for c in cats]
    cfg_dict["scanned_contexts"] = n_ctx
    result = CompletenessResult(concepts=table, n_tokens=occ.n_tokens, saes=per_sae, fits=fits,
                                rescaled_fits=rescaled, pooled_rescaled=pooled, config=cfg_dict)
    if out_path is not None:
        result.save(out_path)
    return result


def train_sizes(standard, d_saes: Sequence[int]) -> dict[str, object]:
    """SAEs of other sizes trained exactly like ``standard``'s (a :class:`workbench.studies.profile.StandardSAE`: same
    store, held-out split, architecture, k, batches and token count), in one pass of the multi-SAE trainer and cached
    next to it. Returns ``{"<arch>-<d_sae>": sae}`` for ``d_saes`` plus the standard SAE, ordered by size."""
    from workbench.studies.profile import standard_training
    from workbench.sae.train import RunSpec, train, training_dir

    prof, sae = standard.profile, standard.sae
    arch = sae.cfg.architecture
    extra = sorted({int(d) for d in d_saes} - {int(sae.cfg.d_sae)})
    out = {f"{arch}-{sae.cfg.d_sae}": sae}
    if extra:
        (base,), config = standard_training(prof, standard.store, arch)
        specs = [RunSpec(arch, d, k=base.k, options=dict(base.options)) for d in extra]
        run_dir = training_dir(standard.run_dir.parent, specs, config, standard.source)
        trained = train(specs, config, standard.source, run_dir, progress=prof.progress)
        out.update({f"{arch}-{s.d_sae}": trained.runs[s.resolved_name].sae for s in specs})
    return dict(sorted(out.items(), key=lambda kv: int(kv[1].cfg.d_sae)))
